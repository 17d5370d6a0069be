"""Builds gavel-client. The gRPC stubs are generated from the repository's
proto/ at build time (grpcio-tools is a build requirement), so they always
match the server they were built beside."""

import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
OUT = HERE / "gavel_client" / "_proto"
PROTOS = ["gavel/v1/gavel.proto", "google/rpc/status.proto"]
PACKAGES = [
    "gavel_client",
    "gavel_client.adapters",
    "gavel_client._proto",
    "gavel_client._proto.gavel",
    "gavel_client._proto.gavel.v1",
    "gavel_client._proto.google",
    "gavel_client._proto.google.rpc",
]


def generate() -> None:
    from grpc_tools import protoc
    import grpc_tools

    proto_dir = Path(os.environ.get("GAVEL_PROTO_DIR", HERE.parent.parent / "proto"))
    if not (proto_dir / PROTOS[0]).exists():
        sys.exit(f"gavel-client: no {PROTOS[0]} under {proto_dir} (set GAVEL_PROTO_DIR)")
    include = Path(grpc_tools.__file__).parent / "_proto"
    OUT.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            *PROTOS,
        ]
    )
    if code != 0:
        sys.exit(f"gavel-client: protoc failed ({code})")
    # The generated modules import each other by their proto packages;
    # inside this package they live under gavel_client._proto.
    for path in OUT.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"^from (gavel\.v1|google\.rpc) import", r"from gavel_client._proto.\1 import", text, flags=re.M)
        path.write_text(text)
    for pkg in ["", "gavel", "gavel/v1", "google", "google/rpc"]:
        (OUT / pkg / "__init__.py").touch()


class BuildWithStubs(build_py):
    def run(self):
        generate()
        super().run()


# setuptools checks the package directories before any command runs, so the
# stubs are generated as soon as the build backend loads this file
# (grpcio-tools is installed by then, as a build requirement).
generate()
setup(packages=PACKAGES, package_data={"gavel_client": ["py.typed"]}, cmdclass={"build_py": BuildWithStubs})
