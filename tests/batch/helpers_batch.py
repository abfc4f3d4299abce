"""Shared by the batch tests: a tiny hand-sized conv net and its model info."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from layerscope.datasets.shapes import CLASS_NAMES
from layerscope.info import ModelInfo
from layerscope.inputs import Preprocess

FAST = {"progress": "none", "workers": 0, "batch_size": 8}


def tiny_model(seed: int = 0) -> tuple[nn.Module, ModelInfo]:
    """conv(3→4) ReLU conv(4→8, stride 2) ReLU → GAP → linear(8→10), 32×32 inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    info = ModelInfo(
        class_names=CLASS_NAMES,
        preprocess=Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3),
        output="logits",
    )
    return model, info


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[Any]:
    """A real S3-compatible server on localhost (moto in server mode, on a free port), the AWS
    variables pointing at it (set before anything that must see them starts), and one empty
    ``bucket``; yields its fsspec filesystem. No filesystem instance outlives the server
    (layerscope's and s3fs's caches are cleared on both sides)."""
    import logging
    import socket

    import s3fs
    from moto import server as moto_server

    from layerscope.batch import fs

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)

    def forget() -> None:
        fs._FS.clear()
        s3fs.S3FileSystem.clear_instance_cache()

    forget()
    try:
        f, _ = fs.filesystem(f"s3://{bucket}")
        f.mkdir(bucket)
        yield f
    finally:
        forget()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
