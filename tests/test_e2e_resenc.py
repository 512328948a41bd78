"""nnU-Net's recommended ResEnc M preset through its own commands: ``nnUNetv2_plan_and_preprocess -pl
nnUNetPlannerResEncM``, then ``nnUNetv2_train -p nnUNetResEncUNetMPlans`` (a few iterations) and
``nnUNetv2_predict`` for one steerable and one mirror trainer; the checkpoints hold the residual-encoder
networks."""
import json

import pytest
import torch
from conftest import DATASET_ID, DATASET_NAME

pytestmark = pytest.mark.e2e

PLANS = "nnUNetResEncUNetMPlans"


@pytest.fixture(scope="module")
def resenc_planned(nnunet_workspace):
    """The shared dataset, also planned by nnU-Net's ResEnc M planner (its 3d_fullres data identifier is
    nnUNetPlans', so the data are preprocessed again into the same folder)."""
    nnunet_workspace.run("nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "1",
                         "-pl", "nnUNetPlannerResEncM")
    plans = nnunet_workspace.preprocessed / DATASET_NAME / f"{PLANS}.json"
    assert plans.exists()
    # nnU-Net's ResEnc M planner gives this tiny dataset batch size 8; the tiny trainers take 2 (a plans
    # edit a user may make too), so the steerable network's two iterations stay short on the CI's CPU
    content = json.loads(plans.read_text())
    assert content["configurations"]["3d_fullres"]["architecture"]["network_class_name"].endswith(
        "ResidualEncoderUNet"), "nnU-Net's planner wrote residual-encoder plans"
    content["configurations"]["3d_fullres"]["batch_size"] = 2
    plans.write_text(json.dumps(content, indent=2))
    return nnunet_workspace


@pytest.mark.parametrize("trainer, network, first_weight", [
    ("nnUNetTrainerE3nn_tiny", "E3nnResEncUNet", "encoder.stem.conv.weight"),
    ("nnUNetTrainerMirror_tiny", "MirrorResEncUNet", "encoder.stem.convs.0.conv.weight"),
])
def test_trainer_trains_and_predicts_from_resenc_m_plans(resenc_planned, trained_model, tmp_path, trainer,
                                                         network, first_weight):
    ws = resenc_planned
    model = trained_model(trainer, plans=PLANS)
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    assert first_weight in weights, f"the checkpoint holds a {network} (stem first)"
    assert any(".blocks." in k or ".block1." in k for k in weights), "residual blocks in the encoder"
    out = tmp_path / "pred"
    proc = ws.run("nnUNetv2_predict", "-i", ws.dataset_raw / "imagesTs", "-o", out, "-d", DATASET_ID,
                  "-c", "3d_fullres", "-p", PLANS, "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "0",
                  "-nps", "0")
    cases = sorted(p.name for p in out.glob("*.nii.gz"))
    assert cases == ["RodsDiscs_100.nii.gz", "RodsDiscs_101.nii.gz"], proc.stdout[-2000:]
    metrics = ws.evaluate(out, model)
    assert len(metrics["metric_per_case"]) == 2
