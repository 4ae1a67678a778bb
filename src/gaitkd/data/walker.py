"""Procedural walking person: identity/walk parameters, 3-D gait kinematics and view projection.

This module owns the *body model* of the synthetic CASIA-B generator (``synthetic.py`` owns rasterising, noise and
the on-disk layout). A person is a set of tapered capsules (two end points + two radii) attached to a 3-D skeleton
whose joint angles are periodic functions of the gait phase. The skeleton is rotated about the vertical axis by the
camera view (CASIA-B convention: 000 = walking towards the camera, 090 = side view, 180 = walking away) and projected
orthographically with a slight camera elevation. All lengths are in units of stature; every array is vectorised over
the T frames of a sequence.

World axes: x = the person's left->right (lateral), y = up, z = walking direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Params = dict[str, float]

# name: (mean, sd) of each identity parameter. Lengths/radii are fractions of stature, angles in degrees.
# The spreads are what makes identities separable; per-walk jitter (WALK_JITTER) is much smaller.
IDENTITY_PARAMS: dict[str, tuple[float, float]] = {
    "head_r": (0.060, 0.006),
    "neck_len": (0.035, 0.008),
    "neck_r": (0.024, 0.004),
    "trunk_len": (0.290, 0.018),
    "shoulder_half": (0.118, 0.013),
    "shoulder_r": (0.036, 0.005),
    "chest_half": (0.095, 0.012),
    "chest_depth": (0.068, 0.010),
    "hip_half": (0.082, 0.010),
    "hip_depth": (0.066, 0.010),
    "thigh_len": (0.245, 0.014),
    "shank_len": (0.235, 0.014),
    "thigh_r": (0.052, 0.007),
    "knee_r": (0.036, 0.004),
    "ankle_r": (0.025, 0.003),
    "foot_len": (0.125, 0.010),
    "upper_arm_len": (0.170, 0.010),
    "forearm_len": (0.150, 0.010),
    "arm_r": (0.030, 0.004),
    "hand_r": (0.024, 0.003),
    "cycle_frames": (27.0, 2.5),  # frames per gait cycle at 25 fps (cadence)
    "hip_amp": (23.0, 3.5),  # thigh swing amplitude (stride length)
    "hip_offset": (3.0, 2.0),
    "knee_swing": (58.0, 7.0),
    "knee_stance": (12.0, 5.0),  # stance-phase knee flexion = vertical bounce
    "foot_pitch": (14.0, 5.0),
    "arm_amp": (20.0, 8.0),  # arm swing
    "arm_asym": (0.0, 0.15),  # relative left/right arm-swing difference
    "elbow_base": (14.0, 7.0),
    "elbow_swing": (14.0, 6.0),
    "arm_abduct": (7.0, 3.0),
    "lean": (4.0, 3.0),  # trunk posture
    "head_tilt": (6.0, 5.0),
    "sway": (0.012, 0.005),  # lateral pelvis sway
    "pelvis_rot": (5.0, 2.5),
    "toe_out": (8.0, 5.0),
}
# Per-walk relative (r) or absolute (a) jitter: the same person walks slightly differently every time.
WALK_JITTER: dict[str, tuple[str, float]] = {
    "cycle_frames": ("r", 0.04),
    "hip_amp": ("r", 0.07),
    "knee_swing": ("r", 0.05),
    "arm_amp": ("r", 0.15),
    "arm_abduct": ("a", 1.5),
    "lean": ("a", 1.5),
    "head_tilt": ("a", 2.5),
    "elbow_base": ("a", 4.0),
}
CARRY_KINDS = ("backpack", "shoulder_bag", "handbag")
ELEVATION_DEG = 8.0  # camera looks slightly down: feet nearer to the camera appear lower


def sample_identity(rng: np.random.Generator) -> Params:
    """Draw one identity: body proportions + gait style (a truncated normal around ``IDENTITY_PARAMS``)."""
    z = np.clip(rng.standard_normal(len(IDENTITY_PARAMS)), -2.5, 2.5)
    return {k: m + s * zi for (k, (m, s)), zi in zip(IDENTITY_PARAMS.items(), z)}


def sample_walk(rng: np.random.Generator, ident: Params, condition: str) -> Params:
    """One recorded walk of ``ident`` under ``condition`` (``nm``/``bg``/``cl``): style jitter + bag/coat shape.

    Shared by all views of the walk (CASIA-B films one walk with 11 cameras at once).
    """
    walk = dict(ident)
    for k, (mode, s) in WALK_JITTER.items():
        e = s * float(np.clip(rng.standard_normal(), -2.5, 2.5))
        walk[k] = walk[k] * (1.0 + e) if mode == "r" else walk[k] + e
    walk["carry"] = -1.0
    walk["coat"] = 0.0
    if condition == "bg":
        walk["carry"] = float(rng.integers(len(CARRY_KINDS)))
        walk["bag_side"] = float(rng.choice([-1.0, 1.0]))
        walk["bag_w"] = rng.uniform(0.14, 0.26)
        walk["bag_h"] = rng.uniform(0.14, 0.28)
        walk["bag_d"] = rng.uniform(0.06, 0.16)
        walk["bag_drop"] = rng.uniform(0.0, 0.08)
        if CARRY_KINDS[int(walk["carry"])] == "handbag":  # the carrying arm hardly swings
            walk["hold"] = rng.uniform(0.6, 0.9)
    elif condition == "cl":
        walk["coat"] = 1.0
        walk["coat_len"] = rng.uniform(0.10, 0.30)  # hem below the pelvis
        walk["coat_thick"] = rng.uniform(0.020, 0.050)
        walk["coat_flare"] = rng.uniform(0.2, 0.8)
        walk["sleeve"] = rng.uniform(0.008, 0.020)
        walk["hood"] = rng.uniform(0.0, 0.025)
    elif condition != "nm":
        raise ValueError(f"unknown walking condition {condition!r}; expected 'nm', 'bg' or 'cl'")
    return walk


def _bump(phi: np.ndarray, centre: float, power: float) -> np.ndarray:
    """Smooth periodic bump in [0, 1] peaking at ``centre`` (narrower for larger ``power``)."""
    return ((1.0 + np.cos(phi - centre)) * 0.5) ** power


def _vec(x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float, n: int) -> np.ndarray:
    """Stack three scalars/[T] arrays into ``[T, 3]``."""
    return np.stack([np.broadcast_to(np.asarray(c, float), (n,)) for c in (x, y, z)], -1)


def skeleton(w: Params, phase: np.ndarray) -> dict[str, np.ndarray]:
    """3-D joint positions ``{name: [T, 3]}`` for gait phase ``phase`` ``[T]`` (radians, 2*pi per cycle)."""
    n = len(phase)
    rad = np.deg2rad
    sway = w["sway"] * np.sin(phase)
    rot = rad(w["pelvis_rot"]) * np.sin(phase)  # pelvis turns with the stride, shoulders counter-rotate
    lean = rad(w["lean"]) + rad(1.5) * np.cos(2 * phase)
    pelvis = _vec(sway, 0.0, 0.0, n)
    up = _vec(0.0, np.cos(lean), np.sin(lean), n)
    neck = pelvis + w["trunk_len"] * up
    j: dict[str, np.ndarray] = {"pelvis": pelvis, "neck": neck}
    tilt = lean + rad(w["head_tilt"])
    j["head"] = neck + (w["neck_len"] + w["head_r"]) * _vec(0.0, np.cos(tilt), np.sin(tilt), n)
    j["chest"] = neck - 0.3 * w["trunk_len"] * up
    for side, s, leg_phase in (("r", 1.0, phase), ("l", -1.0, phase + np.pi)):
        lateral = _vec(s * np.cos(rot), 0.0, -s * np.sin(rot), n)  # rotated left/right axis
        hip = pelvis + w["hip_half"] * lateral
        flex = rad(w["hip_offset"] + w["hip_amp"] * np.sin(leg_phase))
        knee_flex = rad(w["knee_swing"] * _bump(leg_phase, -0.45, 3.0) + w["knee_stance"] * _bump(leg_phase, 2.4, 6.0))
        toe = rad(w["toe_out"]) * s
        j[f"hip_{side}"] = hip
        j[f"knee_{side}"] = hip + w["thigh_len"] * _vec(0.0, -np.cos(flex), np.sin(flex), n)
        shank = flex - knee_flex
        j[f"ankle_{side}"] = j[f"knee_{side}"] + w["shank_len"] * _vec(0.0, -np.cos(shank), np.sin(shank), n)
        pitch = rad(w["foot_pitch"]) * np.sin(leg_phase + 0.3)
        j[f"toe_{side}"] = j[f"ankle_{side}"] + w["foot_len"] * _vec(
            np.sin(toe) * np.cos(pitch), -np.sin(pitch) - 0.25, np.cos(toe) * np.cos(pitch), n
        )
        # Arms swing against the leg of the same side; elbows bend more on the forward swing.
        hold = w.get("hold", 0.0) if s == w.get("bag_side") else 0.0
        amp = w["arm_amp"] * (1.0 - s * w["arm_asym"]) * (1.0 - hold)
        swing = rad(w["hip_offset"] - amp * np.sin(leg_phase))
        elbow = rad(w["elbow_base"] + w["elbow_swing"] * (1.0 - np.sin(leg_phase)) * 0.5)
        ab = rad(w["arm_abduct"])
        counter = _vec(s * np.cos(0.6 * rot), 0.0, s * np.sin(0.6 * rot), n)  # shoulder axis turns against `rot`
        shoulder = neck - 0.35 * w["shoulder_r"] * up + w["shoulder_half"] * counter
        j[f"shoulder_{side}"] = shoulder
        j[f"elbow_{side}"] = shoulder + w["upper_arm_len"] * _vec(
            s * np.sin(ab), -np.cos(ab) * np.cos(swing), np.cos(ab) * np.sin(swing), n
        )
        fore = swing + elbow
        j[f"wrist_{side}"] = j[f"elbow_{side}"] + w["forearm_len"] * _vec(
            s * np.sin(ab), -np.cos(ab) * np.cos(fore), np.cos(ab) * np.sin(fore), n
        )
    return j


def project(p: np.ndarray, view_deg: float) -> np.ndarray:
    """World points ``[T, 3]`` -> image ``[T, 2]`` (u right, v up) seen from CASIA-B view ``view_deg``.

    Orthographic after rotating about the vertical axis; 000 = the person walks towards the camera (their right side
    appears on the image left), 090 = side view walking to the right, 180 = from behind. The camera looks slightly
    down (``ELEVATION_DEG``), so points nearer to it appear lower.
    """
    th, el = np.deg2rad(view_deg), np.deg2rad(ELEVATION_DEG)
    right = np.array([-np.cos(th), 0.0, np.sin(th)])
    towards = np.array([np.sin(th), 0.0, np.cos(th)])  # from the person to the camera
    return np.stack([p @ right, p[:, 1] * np.cos(el) - (p @ towards) * np.sin(el)], -1)


@dataclass
class Capsules:
    """2-D tapered capsules of one sequence: end points ``p0, p1`` ``[K, T, 2]`` (u right, v up), radii ``[K, T]``."""

    p0: np.ndarray
    p1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray


class _Builder:
    """Collects capsules from projected joints (keeps ``body_capsules`` readable)."""

    def __init__(self, joints: dict[str, np.ndarray], view_deg: float) -> None:
        self.view = view_deg
        self.c, self.s = np.cos(np.deg2rad(view_deg)), np.sin(np.deg2rad(view_deg))
        self.n = len(next(iter(joints.values())))
        self.proj = {k: self.point(v) for k, v in joints.items()}
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def point(self, p: np.ndarray) -> np.ndarray:
        return project(p, self.view)

    def width(self, half_lateral: float, half_depth: float) -> float:
        """Projected half-extent of a horizontal ellipse (lateral x depth) seen from this view."""
        return float(np.hypot(half_lateral * self.c, half_depth * self.s))

    def add(self, a: np.ndarray | str, b: np.ndarray | str, r0: np.ndarray | float, r1: np.ndarray | float) -> None:
        pa = self.proj[a] if isinstance(a, str) else a
        pb = self.proj[b] if isinstance(b, str) else b
        self.parts.append((pa, pb, np.broadcast_to(r0, (self.n,)), np.broadcast_to(r1, (self.n,))))

    def capsules(self) -> Capsules:
        p0, p1, r0, r1 = (np.stack(x).astype(np.float32) for x in zip(*self.parts))
        return Capsules(p0, p1, r0, r1)


def body_capsules(w: Params, phase: np.ndarray, view_deg: float) -> Capsules:
    """Capsules ``[K, T, ...]`` of the walker ``w`` at gait phases ``phase`` ``[T]`` seen from ``view_deg``."""
    j = skeleton(w, phase)
    b = _Builder(j, view_deg)
    coat = w["coat"] > 0
    sleeve = w.get("sleeve", 0.0) if coat else 0.0
    thick = w.get("coat_thick", 0.0) if coat else 0.0
    up = np.array([0.0, 1.0])
    hr = w["head_r"] + (w.get("hood", 0.0) if coat else 0.0)
    b.add(b.proj["head"] - 0.25 * hr * up, b.proj["head"] + 0.2 * hr * up, 0.9 * hr, 0.9 * hr)
    b.add("neck", "head", w["neck_r"] + thick, w["neck_r"])
    b.add("shoulder_l", "shoulder_r", w["shoulder_r"] + thick, w["shoulder_r"] + thick)
    chest_w = b.width(w["chest_half"] + thick, w["chest_depth"] + thick)
    hip_w = b.width(w["hip_half"] + thick, w["hip_depth"] + thick)
    b.add("chest", "pelvis", chest_w, hip_w)
    b.add("hip_l", "hip_r", w["thigh_r"], w["thigh_r"])
    for s in ("l", "r"):
        b.add(f"hip_{s}", f"knee_{s}", w["thigh_r"], w["knee_r"])
        b.add(f"knee_{s}", f"ankle_{s}", w["knee_r"], w["ankle_r"])
        b.add(f"ankle_{s}", f"toe_{s}", w["ankle_r"], 0.6 * w["ankle_r"])
        b.add(f"shoulder_{s}", f"elbow_{s}", w["arm_r"] + 1.3 * sleeve, w["arm_r"] + sleeve)
        b.add(f"elbow_{s}", f"wrist_{s}", w["arm_r"] + sleeve, 0.8 * w["arm_r"] + sleeve)
        b.add(f"wrist_{s}", f"wrist_{s}", w["hand_r"], w["hand_r"])
    if coat:
        _add_coat(b, j, w, hip_w)
    if w["carry"] >= 0:
        _add_bag(b, j, w, phase)
    return b.capsules()


def _add_coat(b: _Builder, j: dict[str, np.ndarray], w: Params, hip_w: float) -> None:
    """Long coat: the trunk continues below the pelvis and flares with the spread of the knees."""
    hem = j["pelvis"] - np.array([0.0, w["coat_len"], 0.0])
    spread = np.abs(b.point(j["knee_l"])[:, 0] - b.point(j["knee_r"])[:, 0])
    frac = min(w["coat_len"] / w["thigh_len"], 1.0)
    hem_r = np.maximum(hip_w + 0.5 * w["coat_thick"], w["coat_flare"] * frac * 0.5 * spread + w["thigh_r"])
    end = b.point(hem)
    end[:, 1] += hem_r  # the rounded cap, not its centre, sits at the hem
    b.add(b.point(j["chest"]), end, b.width(w["chest_half"], w["chest_depth"]) + w["coat_thick"], hem_r)


def _add_bag(b: _Builder, j: dict[str, np.ndarray], w: Params, phase: np.ndarray) -> None:
    """Bag blob + strap; its size, side and kind come from the walk parameters."""
    kind = CARRY_KINDS[int(w["carry"])]
    side = w["bag_side"]
    n = len(j["pelvis"])
    half_h = 0.5 * w["bag_h"]
    r = b.width(0.5 * w["bag_w"], 0.5 * w["bag_d"])
    if kind == "backpack":
        centre = j["chest"] - np.array([0.0, w["bag_drop"], w["chest_depth"] + 0.5 * w["bag_d"]])
        top = centre + np.array([0.0, half_h - r * 0.5, 0.0])
        bot = centre - np.array([0.0, half_h - r * 0.5, 0.0])
        b.add(b.point(top), b.point(bot), r, r)
        return
    if kind == "shoulder_bag":
        lateral = j["hip_r"] - j["pelvis"]
        lateral /= np.linalg.norm(lateral, axis=1, keepdims=True)
        centre = j["pelvis"] + lateral * side * (w["hip_half"] + 0.5 * w["bag_d"] + w["thigh_r"])
        centre = centre + _vec(0.0, -w["bag_drop"], 0.03 * np.sin(phase), n)  # swings with the stride
        strap_from = j["shoulder_l" if side > 0 else "shoulder_r"]
        b.add(b.point(strap_from), b.point(centre), 0.012, 0.012)
    else:  # handbag hangs from the wrist of the carrying side
        wrist = j["wrist_r" if side > 0 else "wrist_l"]
        centre = wrist - np.array([0.0, 0.05 + half_h, 0.0])
        b.add(b.point(wrist), b.point(centre), 0.01, 0.01)
    top = centre + np.array([0.0, 0.5 * half_h, 0.0])
    bot = centre - np.array([0.0, 0.5 * half_h, 0.0])
    b.add(b.point(top), b.point(bot), 0.6 * r + 0.02, 0.6 * r + 0.02)
