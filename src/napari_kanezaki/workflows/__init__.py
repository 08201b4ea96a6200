"""Workflows over the core: stacks and volumes, one-call `segment`, batches on Dask,
evaluation against ground truth and hyper-parameter search.

Used by the two faces (`napari_kanezaki.plugin`, `napari_kanezaki.cli`) and by scripts;
imports neither Qt nor napari.
"""
