"""Bad input to the demo and the API: checkpoint files, weight files, images, proposals. Each gets
a one-line message (DataError) naming the file, image or row, never a traceback or a crash."""
import pytest
import torch

from misc.checkpoint import load_checkpoint
from misc.io import DataError


@pytest.mark.parametrize("content, says", [
    (None, "empty"),
    ({"rnn.weight": torch.zeros(2)}, "bare state dict"),
    ([1, 2, 3], "a list"),
    ({"model": {}}, "without 'config'"),
    (b"\x80\x04garbage", "cannot load checkpoint"),
])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, content, says):
    path = tmp_path / "model.pth"
    if content is None:
        path.write_bytes(b"")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(DataError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert says in msg and str(path) in msg and "\n" not in msg
