"""The weight loader under hostile files: a seeded fuzzer over legacy ``.pth``, zip ``.pth``
and ``.safetensors`` files (every failure a :class:`WeightsError`, nothing else escapes), and
state dicts that read fine but cannot give maps (integer, sparse)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from torch import nn

from layerscope.errors import WeightsError
from layerscope.models.weights import apply_state_dict, read_state_dict

#: Mutated files per format (three formats): a few hundred cases in all, a few seconds.
CASES = 120


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def _originals(tmp_path: Path) -> dict[str, bytes]:
    from safetensors.torch import save_file

    state = _tiny().state_dict()
    files = {
        "legacy.pth": lambda p: torch.save(state, p, _use_new_zipfile_serialization=False),
        "zip.pth": lambda p: torch.save(state, p),
        "w.safetensors": lambda p: save_file({k: v.contiguous() for k, v in state.items()}, str(p)),
    }
    out = {}
    for name, write in files.items():
        write(tmp_path / name)
        out[name] = (tmp_path / name).read_bytes()
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:  # flip bytes
            for j in range(i, min(len(b), i + rng.randint(1, 8))):
                b[j] = rng.randrange(256)
        elif op == 1:  # truncate
            b = b[: rng.randrange(len(b) + 1)]
        elif op == 2:  # insert junk
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and b:  # delete a run
            del b[i : i + rng.randint(1, 32)]
        elif b:  # an interesting integer (sizes, offsets)
            value = rng.choice([0, 1, 0x7F, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1])
            width = rng.choice([1, 2, 4, 8])
            b[i : i + width] = value.to_bytes(8, "little")[:width]
    return bytes(b)


def test_fuzzed_weight_files_fail_only_as_weights_errors(tmp_path: Path) -> None:
    rng = random.Random(20261204)
    escaped: list[str] = []
    loaded = refused = 0
    for name, data in _originals(tmp_path).items():
        for case in range(CASES):
            p = tmp_path / f"{case}-{name}"
            p.write_bytes(_mutate(data, rng))
            try:
                apply_state_dict(_tiny(), read_state_dict(p), str(p))
                loaded += 1
            except WeightsError as e:
                assert "\n" not in str(e), str(e)
                refused += 1
            except Exception as e:  # exactly what must not happen
                escaped.append(f"{name} #{case}: {type(e).__name__}: {e}"[:200])
            p.unlink()
    assert not escaped, f"{len(escaped)} escaped:\n" + "\n".join(escaped[:10])
    assert refused > CASES  # the fuzzer does break files (and some still load: bytes inside tensors)
    assert loaded + refused == 3 * CASES


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_a_state_dict_without_floats_is_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    state = {k: v.to(dtype) for k, v in _tiny().state_dict().items()}
    torch.save(state, tmp_path / "ints.pth")
    with pytest.raises(WeightsError, match="no floating-point tensor") as e:
        read_state_dict(tmp_path / "ints.pth")
    assert str(dtype).removeprefix("torch.") in str(e.value)


def test_an_integer_tensor_where_the_model_has_floats_is_refused(tmp_path: Path) -> None:
    state = _tiny().state_dict()
    state["0.weight"] = state["0.weight"].to(torch.int64)
    with pytest.raises(WeightsError, match=r"not floating-point: 0\.weight: file torch\.int64 vs model torch\.float32"):
        apply_state_dict(_tiny(), state, "file")
    state = _tiny().state_dict()  # an integer buffer where the model has one is fine
    assert state["1.num_batches_tracked"].dtype == torch.int64
    apply_state_dict(_tiny(), state, "file")


def test_a_sparse_tensor_is_refused_in_one_line(tmp_path: Path) -> None:
    state = _tiny().state_dict()
    state["2.weight"] = state["2.weight"].reshape(2, 4).to_sparse()
    torch.save(state, tmp_path / "sparse.pth")
    with pytest.raises(WeightsError, match=r"'2\.weight' is a sparse tensor") as e:
        read_state_dict(tmp_path / "sparse.pth")
    assert "\n" not in str(e.value)
