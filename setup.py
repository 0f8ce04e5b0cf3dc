"""jaxtts: JAX/Flax zero-shot text-to-speech (GMM-VAE codec, GMM-LM, FACodec + diffusion, CLONE)."""

from setuptools import find_packages, setup

setup(
    name="jaxtts",
    version="0.1.0",
    description="JAX/Flax training codebase for zero-shot text-to-speech.",
    packages=find_packages(include=["jaxtts", "jaxtts.*", "data_pipelines", "configs"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.11,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "grain>=0.2.12,<0.3",
        "array_record>=0.7,<0.9",
        "librosa>=0.10,<0.12",
        "soxr>=0.4",
        "einops>=0.8,<0.9",
        "ml_collections>=1.0,<2",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "soundfile>=0.12",
        "msgpack>=1.0",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "espeakng-loader>=0.2.4,<0.3",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3"],
        # Codec metrics (installed by `make test` and `make demo`).
        "eval": ["pesq>=0.0.4", "pystoi>=0.4.1", "visqol-python[lattice]>=3.8"],
        # Zero-shot TTS metrics (ASR WER, speaker SIM, MOS proxy); resemblyzer pulls torch.
        "eval-tts": ["faster-whisper", "jiwer", "speechmos", "resemblyzer"],
        "tfds": ["tensorflow-datasets"],
    },
    entry_points={
        "console_scripts": [
            "jaxtts-corpus=data_pipelines.espeak_corpus:main",
            "jaxtts-train=jaxtts.train.cli:main",
            "jaxtts-codec=jaxtts.codec.cli:main",
            "jaxtts-synthesize=jaxtts.infer.cli:main",
        ],
    },
)
