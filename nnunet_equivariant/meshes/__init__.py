"""meshes."""
