"""`learner evaluate RUN_DIR`: play a checkpoint without a learner or actors, optionally to a video.

The policy is `learner.trained_policy.load_policy`'s: it acts exactly as an actor's does (same env
pipeline, same frame stack, actions sampled from the softmax with a seeded numpy Generator, or
the argmax with ``greedy``). Returns are the
raw game score: rewards are never clipped here, and an ``info['raw_reward']`` wins if the env
reports one.

Video: the first episode's RGB frames (for stable-retro the emulator screen, for Gymnasium envs
``render()`` in ``rgb_array`` mode where the env supports it, else a picture of the observation),
every ``stride``-th agent step, at most ``MAX_VIDEO_FRAMES`` frames (the stride doubles when the
cap is reached, so memory stays bounded on long episodes). ``.gif`` is always available; ``.mp4``
needs the ``imageio-ffmpeg`` package.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from common.families import family_for
from learner.trained_policy import PolicyError, load_policy

log = logging.getLogger("learner")

MAX_VIDEO_FRAMES = 1000
VIDEO_STRIDE = 2  # record every 2nd agent step to start with
VIDEO_SUFFIXES = (".gif", ".mp4")


EvaluateError = PolicyError  # one-line, user-facing message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- video


class _Recorder:
    """Keeps every `stride`-th RGB frame of one episode, at most `cap` of them."""

    def __init__(self, grab, step_hz: float, cap: int = MAX_VIDEO_FRAMES, stride: int = VIDEO_STRIDE):
        self.grab = grab  # () -> (H, W, 3) uint8
        self.step_hz = step_hz
        self.cap = cap
        self.stride = stride
        self.frames: list[np.ndarray] = []
        self.step = 0

    def capture(self) -> None:
        if self.step % self.stride == 0:
            self.frames.append(np.array(self.grab(), dtype=np.uint8, copy=True))
            if len(self.frames) >= self.cap:  # halve the frame rate instead of growing
                self.frames = self.frames[::2]
                self.stride *= 2
        self.step += 1

    @property
    def fps(self) -> float:
        return self.step_hz / self.stride


def _vector_picture(obs: np.ndarray, width: int = 320, row: int = 24) -> np.ndarray:
    """A vector observation as labelled horizontal bars (tanh-scaled, centred at zero)."""
    import cv2

    values = np.asarray(obs, dtype=np.float64).reshape(-1)[:16]
    height = -(-(row * max(len(values), 1) + 8) // 16) * 16  # MP4 wants multiples of 16
    img = np.full((height, width, 3), 255, np.uint8)
    mid = width // 2 + 40
    half = width - mid - 8
    for i, v in enumerate(values):
        y0 = 4 + i * row
        end = int(round(mid + np.tanh(v) * half)) if np.isfinite(v) else mid
        cv2.rectangle(img, (min(mid, end), y0 + 4), (max(mid, end), y0 + row - 4),
                      (200, 60, 40) if v < 0 else (40, 90, 200), -1)
        cv2.line(img, (mid, y0), (mid, y0 + row), (0, 0, 0), 1)
        cv2.putText(img, f"{v:+.3f}", (4, y0 + row - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return img


def _image_picture(obs: np.ndarray, min_size: int = 168) -> np.ndarray:
    """A preprocessed (grayscale) frame, scaled up by a whole factor, as RGB."""
    frame = np.asarray(obs)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    scale = max(1, -(-min_size // max(frame.shape[0], 1)))
    frame = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    return frame if frame.ndim == 3 else np.stack([frame] * 3, axis=-1)


def _frame_source(env, env_id: str, frame_skip: int, current_obs):
    """A function returning the current RGB frame, and the agent steps per second of the env.

    `current_obs()` returns the newest preprocessed observation (for the fallback picture).
    """
    own = family_for(env_id).video_source(env, frame_skip)
    if own is not None:
        return own
    unwrapped = env.unwrapped
    meta = getattr(unwrapped, "metadata", {}) or {}
    hz = float(meta.get("render_fps") or 30.0) / frame_skip
    if "rgb_array" in (meta.get("render_modes") or ()):
        old = getattr(unwrapped, "render_mode", None)
        try:
            unwrapped.render_mode = "rgb_array"
            img = unwrapped.render()
            if isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3:
                return (lambda: unwrapped.render()), hz
        except Exception as exc:  # e.g. pygame not installed for the classic-control envs
            log.info("render() unavailable (%s); the video shows the observation", _first_line(exc))
        with contextlib.suppress(AttributeError):  # a read-only render_mode stays as it was
            unwrapped.render_mode = old
    obs = np.asarray(current_obs())
    if obs.dtype == np.uint8 and obs.ndim in (2, 3):
        return (lambda: _image_picture(current_obs())), hz
    return (lambda: _vector_picture(current_obs())), hz


def _check_video_path(video: str | Path) -> Path:
    path = Path(video)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise EvaluateError(f"--video must end in .gif or .mp4, got {path.name!r}")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise EvaluateError("writing .mp4 needs the imageio-ffmpeg package "
                                "(pip install imageio-ffmpeg); or use a .gif file name") from None
    if not path.parent.is_dir():
        raise EvaluateError(f"directory for --video does not exist: {path.parent}")
    return path


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> None:
    """GIF via Pillow (fast octree palette per frame), MP4 via imageio-ffmpeg."""
    path = Path(path)
    if not frames:
        raise EvaluateError("no frames to write")
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            # GIF delays are in 10 ms steps and most viewers treat < 20 ms as 100 ms.
            duration = max(20, int(round(1000.0 / fps / 10.0)) * 10)
            images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE,
                                                  dither=Image.Dither.NONE) for f in frames]
            images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        else:
            import imageio.v2 as imageio

            imageio.mimwrite(path, frames, fps=max(fps, 1.0))
    except OSError as exc:
        raise EvaluateError(f"cannot write {path}: {_first_line(exc)}") from exc


# --------------------------------------------------------------------------- play


def evaluate(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    episodes: int = 5,
    video: str | Path | None = None,
    seed: int = 12345,
    greedy: bool = False,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Play `episodes` episodes of a run's newest checkpoint (or `checkpoint`), each cut after
    `max_steps` agent steps when given.

    Returns ``{'mean_return', 'returns', 'lengths', 'checkpoint'}`` (lengths in agent steps,
    checkpoint the file played) plus ``'video'`` (the path) when a video was written.
    Raises ``EvaluateError`` with a one-line message for anything a user can fix.
    """
    if episodes < 1:
        raise EvaluateError(f"episodes must be at least 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise EvaluateError(f"max_steps must be at least 1, got {max_steps}")
    video_path = _check_video_path(video) if video else None
    policy = load_policy(run_dir, checkpoint=checkpoint, seed=seed)
    env = policy.make_env(seed=seed)  # the game score: rewards are never clipped here
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one observation at a time, as the actor does: extra threads only cost
    try:  # one retro emulator per process: always close it
        returns: list[float] = []
        lengths: list[int] = []
        obs, _ = env.reset()
        newest = [np.asarray(obs)]
        recorder: _Recorder | None = None
        if video_path is not None:
            skip = policy.config.frame_skip  # what the family uses (Config records it so)
            grab, hz = _frame_source(env, policy.config.env, skip, lambda: newest[0])
            recorder = _Recorder(grab, hz)
        for episode in range(episodes):
            if episode:
                obs, _ = env.reset()
                newest[0] = np.asarray(obs)
            policy.reset()
            recording = recorder is not None and episode == 0
            if recording:
                recorder.capture()
            total, steps, done = 0.0, 0, False
            while not done:
                action = policy.act(newest[0], greedy=greedy)
                obs, reward, term, trunc, info = env.step(action)
                newest[0] = np.asarray(obs)  # the video's fallback picture shows it
                total += float(info.get("raw_reward", reward))
                steps += 1
                done = bool(term or trunc) or (max_steps is not None and steps >= max_steps)
                if recording:
                    recorder.capture()
            returns.append(total)
            lengths.append(steps)
            log.info("episode %d: return %.1f, %d steps", episode + 1, total, steps)
    finally:
        env.close()
        torch.set_num_threads(threads)

    result: dict[str, Any] = {
        "mean_return": float(np.mean(returns)),
        "returns": returns,
        "lengths": lengths,
        "checkpoint": str(policy.checkpoint),
    }
    if video_path is not None and recorder is not None:
        write_video(video_path, recorder.frames, recorder.fps)
        result["video"] = str(video_path)
    return result


__all__ = ["EvaluateError", "evaluate", "write_video"]
