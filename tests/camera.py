"""Test helper: the synthetic H.264 camera (:mod:`iec62676_2_33.demo_camera`) under the names the tests use."""

from __future__ import annotations

from iec62676_2_33.demo_camera import HEIGHT, SYSTEM_PYTHON, WIDTH, Camera, camera_missing, start_camera

__all__ = ["HEIGHT", "SYSTEM_PYTHON", "WIDTH", "Camera", "camera_available", "start_camera"]


def camera_available() -> bool:
    """GStreamer's RTSP server (through Debian's python3-gi), ffmpeg and ffprobe are installed."""
    return camera_missing() is None
