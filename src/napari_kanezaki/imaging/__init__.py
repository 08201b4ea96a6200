"""Image handling without training: sources, normalisation, preprocessing, tile geometry, files.

NumPy, scikit-image, SciPy, tifffile and imageio only: no torch, Qt or napari. The layers
above (`core`, `workflows`, the faces) turn user images into network inputs and label
images back into files through these modules.
"""
