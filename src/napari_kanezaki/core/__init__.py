"""The compute core: settings, the network, the losses, superpixels, stop rules and training.

Depends on `napari_kanezaki.imaging` (arrays in, labels out) and on torch, never on Qt,
napari or magicgui. Importing this package imports nothing heavy: the modules that need
torch (`network`, `losses`, `segmenter`, ...) load it when they are imported themselves.
"""
