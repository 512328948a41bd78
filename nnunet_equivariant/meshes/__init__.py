"""Mesh-SDF pipeline: IntrA and ACDC surfaces to nnU-Net datasets and per-vertex patch sets, and back.

See ``docs/meshes.md``. Submodules: ``intra`` / ``acdc`` (readers of the real layouts), ``hole_closing``,
``acdc_s`` (ACDC-S surfaces from label volumes), ``sdf``, ``sources``, ``conversion`` (what every converter
shares), ``nnunet_dataset``, ``patch_dataset``, ``patch_training`` (the paper's Table III study),
``backprojection``, ``metrics`` (per-vertex scores), ``mesh_io``, ``standins`` (synthetic data in the real
formats).
"""
from nnunet_equivariant.meshes.acdc_s import acdc_surface
from nnunet_equivariant.meshes.backprojection import (classify_vertices, map_nnunet_predictions,
                                                      read_nnunet_probabilities, vertex_probabilities)
from nnunet_equivariant.meshes.hole_closing import close_holes
from nnunet_equivariant.meshes.labelled_mesh import LabelledMesh
from nnunet_equivariant.meshes.mesh_io import read_labelled_mesh, write_labelled_mesh
from nnunet_equivariant.meshes.metrics import summarize, vertex_metrics
from nnunet_equivariant.meshes.nnunet_dataset import write_nnunet_dataset
from nnunet_equivariant.meshes.patch_dataset import PatchDataset, write_patch_dataset
from nnunet_equivariant.meshes.sdf import SdfGrid, compute_sdf_grid, extract_patches, signed_distance
from nnunet_equivariant.meshes.sources import MeshSource, acdc_source, intra_source, mesh_source

__all__ = ["LabelledMesh", "close_holes", "acdc_surface", "signed_distance", "SdfGrid", "compute_sdf_grid",
           "extract_patches", "MeshSource", "intra_source", "acdc_source", "mesh_source", "write_nnunet_dataset",
           "write_patch_dataset", "PatchDataset", "read_nnunet_probabilities", "vertex_probabilities",
           "classify_vertices", "map_nnunet_predictions", "write_labelled_mesh", "read_labelled_mesh",
           "vertex_metrics", "summarize"]
