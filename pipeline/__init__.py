"""Efficient single-image super-resolution pipeline (ClassSR, GhostSR, CSD, PCL, RFDN) on DVC,
Accelerate and MLflow. Submodules import lazily: ``import pipeline`` stays cheap and cannot fail
because an optional dependency of one part is broken."""

__all__ = ["imresize"]


def __getattr__(name):
    if name == "imresize":
        from pipeline.resize import imresize

        return imresize
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
