"""The package as shipped: its gRPC stubs are what ``proto/`` generates, its
version is the project's, and it is marked typed.

Run from a checkout (it reads ``proto/`` and ``Cargo.toml``)."""

from __future__ import annotations

import re
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO = PACKAGE_ROOT.parent.parent
sys.path.insert(0, str(PACKAGE_ROOT))

import generate_stubs  # noqa: E402
import palisade_client  # noqa: E402

GEN = PACKAGE_ROOT / "palisade_client" / "_gen"


class PackageTest(unittest.TestCase):
    def test_committed_stubs_match_proto(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = generate_stubs.generate(REPO / "proto", Path(tmp))
            self.assertTrue(fresh)
            for path in fresh:
                committed = GEN / path.name
                with self.subTest(file=path.name):
                    self.assertTrue(committed.is_file(), f"{committed} is missing")
                    self.assertEqual(
                        committed.read_text(),
                        path.read_text(),
                        f"{committed} is stale: run `python3 clients/python/generate_stubs.py` "
                        "and commit the result",
                    )
            self.assertEqual(
                sorted(p.name for p in GEN.iterdir() if p.is_file()),
                sorted(p.name for p in fresh),
                "files in _gen/ that generate_stubs.py does not write",
            )

    def test_version_is_the_projects(self) -> None:
        cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
        project = cargo["workspace"]["package"]["version"]
        self.assertEqual(palisade_client.__version__, project)
        pyproject = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text())
        self.assertEqual(pyproject["project"]["dynamic"], ["version"])
        self.assertEqual(pyproject["tool"]["hatch"]["version"]["path"], "palisade_client/_version.py")

    def test_typed_and_extras_name_real_modules(self) -> None:
        self.assertTrue((PACKAGE_ROOT / "palisade_client" / "py.typed").is_file())
        pyproject = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text())
        extras = set(pyproject["project"]["optional-dependencies"])
        self.assertEqual(extras, {"langchain", "langgraph", "crewai", "openai-agents"})
        for module in ("langchain", "crewai", "openai_agents"):
            self.assertTrue((PACKAGE_ROOT / "palisade_client" / f"{module}.py").is_file(), module)

    def test_stub_pins_match_the_declared_dependencies(self) -> None:
        # The generated code refuses runtimes older than the generator:
        # the package must not promise to work with them.
        grpc_gen = (GEN / "palisade_pb2_grpc.py").read_text()
        pb_gen = (GEN / "palisade_pb2.py").read_text()
        grpc_min = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_gen)
        pb_min = re.search(r"Protobuf Python Version: ([\d.]+)", pb_gen)
        assert grpc_min and pb_min
        deps = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        self.assertIn(f"grpcio>={grpc_min.group(1)},<2", deps)
        self.assertIn(f"protobuf>={pb_min.group(1)},<8", deps)


if __name__ == "__main__":
    unittest.main()
