"""The napari face: dock widgets, the thread-worker runner, jobs, notifications, sample data
and the npe2 manifest (``napari.yaml``).

Only this subpackage imports napari, Qt and magicgui; its modules import torch only when a
job runs, so napari starts fast.
"""
