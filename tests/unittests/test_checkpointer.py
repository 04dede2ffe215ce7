"""The recipes' checkpointer survives a run killed while it saves."""

import torch

from speechbrain_gense.training import Checkpointer


class _DiesWhileSaving(torch.nn.Module):
    """A recoverable whose save is interrupted (as by SIGKILL) once ``die`` is set."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))
        self.die = False


def _checkpointer(folder, layer, dying):
    def save(obj, path):
        if obj.die:
            raise KeyboardInterrupt  # the process stops before this file exists
        torch.save(obj.state_dict(), path)

    def load(obj, path, end_of_epoch=True):
        obj.load_state_dict(torch.load(path))

    ckpt = Checkpointer(folder, recoverables={"layer": layer, "dying": dying})
    ckpt.add_recoverable("dying", dying, custom_save_hook=save, custom_load_hook=load)
    return ckpt


def test_a_save_killed_half_way_is_skipped_and_the_last_whole_one_recovered(tmp_path, caplog):
    layer, dying = torch.nn.Linear(2, 2), _DiesWhileSaving()
    ckpt = _checkpointer(tmp_path, layer, dying)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    first = ckpt.save_checkpoint(meta={"loss": 2.0})
    assert sorted(p.name for p in first.path.iterdir()) == ["CKPT.yaml", "dying.ckpt",
                                                             "layer.ckpt"]
    with torch.no_grad():
        layer.weight.fill_(5.0)
    dying.die = True
    try:
        ckpt.save_checkpoint(meta={"loss": 1.0})  # better loss, but never finished
    except KeyboardInterrupt:
        pass
    half = [p for p in tmp_path.iterdir() if p != first.path]
    assert len(half) == 1 and (half[0] / "layer.ckpt").exists()
    assert not (half[0] / "CKPT.yaml").exists()  # the meta file comes last

    # A new run (fresh objects) resumes from the whole checkpoint, even by min_key.
    layer2, dying2 = torch.nn.Linear(2, 2), _DiesWhileSaving()
    again = _checkpointer(tmp_path, layer2, dying2)
    with caplog.at_level("WARNING"):
        found = again.recover_if_possible(min_key="loss")
    assert found.path == first.path
    assert torch.equal(layer2.weight, torch.ones(2, 2))
    assert "incomplete checkpoint" in caplog.text
    assert half[0].exists()  # left on disk, never deleted


def test_checkpoints_of_the_old_layout_missing_or_truncated_files_are_skipped(tmp_path):
    """SpeechBrain's own order (meta first) leaves loadable-looking folders: skipped."""
    layer = torch.nn.Linear(2, 2)
    ckpt = Checkpointer(tmp_path, recoverables={"layer": layer})
    good = ckpt.save_checkpoint(meta={"loss": 3.0})
    missing = ckpt.save_checkpoint(meta={"loss": 1.0})
    (missing.path / "layer.ckpt").unlink()
    truncated = ckpt.save_checkpoint(meta={"loss": 2.0})
    data = (truncated.path / "layer.ckpt").read_bytes()
    (truncated.path / "layer.ckpt").write_bytes(data[: len(data) // 2])
    assert [c.path for c in ckpt.list_checkpoints()] == [good.path]
    assert ckpt.find_checkpoint(min_key="loss").path == good.path
