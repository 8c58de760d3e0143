"""gluon_resnest: ResNeSt (Split-Attention Networks) for MXNet Gluon / GluonCV."""
import glob
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    """Wheels carry the top-level configs/ as gluon_resnest/configs (an editable install
    reads configs/ from the checkout)."""

    def run(self):
        super().run()
        for src in glob.glob(os.path.join("configs", "**", "*.yaml"), recursive=True):
            dest = os.path.join(self.build_lib, "gluon_resnest", src)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(src, dest)


# MXNet 1.9.1 (its last release) imports only with numpy < 1.24; the rest is pinned to builds
# that work with that numpy on Python 3.11.
INSTALL_REQUIRES = [
    "mxnet==1.9.1",
    "gluoncv==0.10.5.post0",
    "numpy>=1.23,<1.24",
    "opencv-python==4.8.1.78",
    "scipy>=1.9,<1.12",
    "pandas>=1.5,<2.1",
    "matplotlib>=3.6,<3.8",
    "contourpy>=1.0.1,<1.4",
    "Pillow",
    "pyyaml",
    "tqdm",
    "scikit-learn>=1.3,<1.8",  # ships the embedded demo's images (handwritten digits)
    "pycocotools>=2.0.7",      # GluonCV's Mask R-CNN transforms (it would pip-install it at run time)
]

# The torch extra converts PyTorch checkpoints; the test extra also brings timm, the official
# `resnest` package and onnxruntime, to compare against them, and import-linter, which CI runs
# to keep the import direction (checked with 2.17: its acyclic_siblings contract). torchvision
# 0.28.0 (pulled by timm) cannot load its C ops next to the CPU torch wheel;
# tests/test_convert.py explains the one-module shim it uses. openvino 2026.4.1 (the openvino
# extra, a runtime for the ONNX export) imports next to numpy 1.23.5 and leaves it alone; its CPU
# plugin's handling of the signal stack needs gluon_resnest/_compat/openvino.py.
TEST_REQUIRES = [
    "pytest>=7", "ruff>=0.4", "torch==2.13.0", "torchvision==0.28.0", "timm==1.0.29",
    "resnest==0.0.5", "safetensors>=0.4", "onnx==1.18.0", "onnxruntime==1.30.0", "openvino==2026.4.1",
    "import-linter>=2.17,<3",
]

setup(
    name="gluon_resnest",
    version="0.2.0",
    description="ResNeSt (Split-Attention Networks) for Apache MXNet Gluon and GluonCV",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8,<3.12",
    packages=find_packages(include=["gluon_resnest", "gluon_resnest.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "torch": ["torch==2.13.0", "safetensors>=0.4"],
        "onnx": ["onnx==1.18.0", "onnxruntime==1.30.0"],
        # runs the ONNX export (deploy.runtimes); a model in MXNet is exported with onnx first
        "openvino": ["openvino==2026.4.1", "onnx==1.18.0"],
        "test": TEST_REQUIRES,
    },
    entry_points={"console_scripts": ["gluon-resnest=gluon_resnest.cli:main"]},
    include_package_data=True,
    cmdclass={"build_py": BuildWithConfigs},
)
