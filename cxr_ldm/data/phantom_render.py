"""Synthetic chest radiographs whose content is known: the image half of the phantom generator.

Every structure is an analytic shape evaluated on the whole pixel grid at once (numpy, float32), so a
256 px image costs a few milliseconds and the same seed gives the same pixels. The picture is built as
an attenuation map (soft tissue minus lung air plus bone, heart, fluid, metal) and then exposed, so a
finding changes the image the way it would on film: effusion and consolidation replace air with
water density, a pneumothorax adds air and removes lung markings.

Geometry is in units of the image width: ``u`` runs from -0.5 (image left) to 0.5 (image right), ``v``
from 0 (top) downwards. PA convention: the patient's RIGHT is on the image LEFT (``u < 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter

__all__ = [
    "DETAIL_KEYS",
    "DEVICE_ETT",
    "DEVICE_LINE",
    "DEVICE_NG",
    "DEVICE_PACEMAKER",
    "FINDING_COLUMNS",
    "Anatomy",
    "complete_details",
    "render_lateral",
    "render_pa",
    "sample_anatomy",
]

# Severity per finding: 0 absent, 1 small/mild, 2 moderate, 3 large (nodule: 3 = mass; devices: count).
FINDING_COLUMNS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion_left",
    "pleural_effusion_right",
    "pneumothorax_left",
    "pneumothorax_right",
    "nodule",
    "consolidation_left",
    "consolidation_right",
    "support_devices",
)

# Where a finding sits, so the report can name what the image shows. Zones: 0 upper, 1 middle
# (right middle lobe / lingula), 2 lower. Sides: 0 right, 1 left.
DETAIL_KEYS: tuple[str, ...] = (
    "nodule_side",
    "nodule_zone",
    "consolidation_right_zone",
    "consolidation_left_zone",
    "devices",
)
DEVICE_ETT, DEVICE_LINE, DEVICE_PACEMAKER, DEVICE_NG = 1, 2, 4, 8
_DEVICES = (DEVICE_ETT, DEVICE_LINE, DEVICE_PACEMAKER, DEVICE_NG)

# Cardiothoracic ratio per cardiomegaly severity (normal drawn per subject in 0.42..0.48).
_CTR = ((0.0, 0.0), (0.53, 0.57), (0.60, 0.64), (0.67, 0.72))
_EFFUSION_HEIGHT = (0.0, 0.13, 0.30, 0.50)  # fluid level, fraction of the lung height from the base
_PTX_SCALE = (1.0, 0.88, 0.78, 0.64)  # collapsed lung size relative to the hemithorax
_NODULE_RADIUS = (0.0, 0.022, 0.036, 0.065)
_CONSOLIDATION_RADIUS = (0.0, 0.075, 0.1, 0.135)


@dataclass(frozen=True)
class Anatomy:
    """One patient's build: stays the same across that patient's studies."""

    body_half: float  # half width of the torso
    neck_half: float
    shoulder: float  # v where the shoulders reach full width
    apex: float  # v of the lung apices
    base: float  # v of the right costophrenic angle
    dome: float  # height of the right hemidiaphragm dome above its costophrenic angle
    left_drop: float  # the left hemidiaphragm sits this much lower
    lung_center: float  # |u| of the lung centre
    lung_half: float  # half width of one lung
    ctr: float  # cardiothoracic ratio without cardiomegaly
    heart_height: float  # vertical reach of the left heart border
    mediastinum: float  # half width of the upper mediastinum
    knob: float  # size of the aortic knob
    rib_spacing: float
    rib_offset: float
    female: bool


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    u = rng.uniform
    return Anatomy(
        body_half=u(0.43, 0.49),
        neck_half=u(0.09, 0.12),
        shoulder=u(0.11, 0.16),
        apex=u(0.15, 0.19),
        base=u(0.84, 0.9),
        dome=u(0.085, 0.125),
        left_drop=u(0.015, 0.035),
        lung_center=u(0.205, 0.225),
        lung_half=u(0.155, 0.18),
        ctr=u(0.42, 0.48),
        heart_height=u(0.22, 0.28),
        mediastinum=u(0.065, 0.08),
        knob=u(0.025, 0.045),
        rib_spacing=u(0.052, 0.06),
        rib_offset=u(0.0, 1.0),
        female=bool(rng.random() < 0.5),
    )


def complete_details(findings: dict[str, int], rng: np.random.Generator) -> dict[str, int]:
    """Fill in where each finding sits (nodule lobe, consolidation lobe, which devices).

    Every value is drawn whether or not the finding is present, so two calls with the same generator
    state and different findings consume the generator identically. Values given in ``findings`` win.
    """
    out = {k: int(findings.get(k, 0)) for k in FINDING_COLUMNS}
    drawn = {
        "nodule_side": int(rng.integers(2)),
        "nodule_zone": int(rng.integers(3)),
        "consolidation_right_zone": int(rng.choice(3, p=[0.3, 0.25, 0.45])),
        "consolidation_left_zone": int(rng.choice(3, p=[0.3, 0.2, 0.5])),
    }
    order = rng.permutation(len(_DEVICES))
    count = min(out["support_devices"], 3)
    drawn["devices"] = int(sum(_DEVICES[i] for i in order[:count]))
    for key in DETAIL_KEYS:
        out[key] = int(findings[key]) if key in findings else drawn[key]
    if out["support_devices"] and not out["devices"]:
        out["devices"] = DEVICE_ETT
    return out


# ---------------------------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------------------------


def _tube(x: np.ndarray) -> np.ndarray:
    """Thickness profile of a cylinder seen side-on, for normalised offset ``x``."""
    return np.sqrt(np.clip(1.0 - x * x, 0.0, 1.0))


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Band-limited noise (unit-ish std): ``cells`` random values across the width, bicubic upsampled."""
    h, w = shape
    ch = max(2, round(cells * h / w))
    low = rng.standard_normal((ch + 2, cells + 2)).astype(np.float32)
    big = Image.fromarray(low, mode="F").resize((w + 2 * w // cells, h + 2 * h // ch), Image.BICUBIC)
    arr = np.asarray(big, dtype=np.float32)
    return arr[w // cells // 2 : w // cells // 2 + h, w // cells // 2 : w // cells // 2 + w].copy()


@dataclass(frozen=True)
class _Pose:
    angle: float
    du: float
    dv: float
    zoom: float
    center: float  # v of the rotation centre in image units
    ref: float  # the same point in anatomy units


def _grid(w: int, h: int, pose: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates of every pixel centre (rotation, shift and zoom of the patient)."""
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5 - pose.du)[None, :]
    v = ((np.arange(h, dtype=np.float32) + 0.5) / w - pose.center - pose.dv)[:, None]
    c, s = np.float32(np.cos(pose.angle)), np.float32(np.sin(pose.angle))
    ua = (c * u + s * v) / pose.zoom
    va = (-s * u + c * v) / pose.zoom + pose.ref
    return ua.astype(np.float32), va.astype(np.float32)


def _to_pixels(points: np.ndarray, w: int, pose: _Pose) -> list[tuple[float, float]]:
    """Inverse of :func:`_grid` for device polylines: anatomy (u, v) -> pixel (x, y)."""
    x = points[:, 0] * pose.zoom
    y = (points[:, 1] - pose.ref) * pose.zoom
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    u = c * x - s * y + pose.du
    v = s * x + c * y + pose.center + pose.dv
    return list(zip(((u + 0.5) * w - 0.5).tolist(), (v * w - 0.5).tolist(), strict=True))


def _bezier(*pts: tuple[float, float], n: int = 24) -> np.ndarray:
    """``n`` points along the Bezier curve with control points ``pts`` (de Casteljau, any degree)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    q = np.broadcast_to(np.asarray(pts, dtype=np.float64), (n, len(pts), 2))
    while q.shape[1] > 1:
        q = q[:, :-1] * (1.0 - t) + q[:, 1:] * t
    return q[:, 0]


# ---------------------------------------------------------------------------------------------
# PA view
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """The pixel grid in anatomy coordinates, shared by every layer of one image."""

    ua: np.ndarray  # signed, patient's right < 0
    va: np.ndarray
    a: np.ndarray  # |ua|: mirrored structures are drawn once for both sides
    right: np.ndarray
    w: int
    h: int


@dataclass(frozen=True)
class _Lungs:
    apex: float  # v of the apices
    apex_a: float  # |u| of the apices
    lateral: float  # |u| of the widest lung
    base_r: float  # v of the costophrenic angles
    base_l: float
    peak_r: float  # v of the hemidiaphragm domes
    peak_l: float


def _distance_px(f: np.ndarray) -> np.ndarray:
    """Turn an implicit function (negative inside) into an approximate distance in pixels."""
    gy, gx = np.gradient(f)
    return f / np.maximum(np.sqrt(gx * gx + gy * gy), np.float32(1e-6))


def _lung_implicit(a: np.ndarray, v: np.ndarray, right: np.ndarray, g: _Lungs) -> np.ndarray:
    """One hemithorax, mirrored by ``a = |u|``: rounded apex, lateral wall, domed diaphragm."""
    base = np.where(right, np.float32(g.base_r), np.float32(g.base_l))
    t = (v - g.apex) / (base - g.apex)
    s = np.clip(t / 0.9, 0.0, 1.0)
    lat = g.apex_a + (g.lateral - g.apex_a) * (1.0 - (1.0 - s) ** 2.5) ** 0.55 * (
        0.95 + 0.08 * np.clip(t, 0, 1)
    )
    m = np.clip(t / 0.22, 0.0, 1.0)
    med = g.apex_a - (g.apex_a - 0.035) * np.sqrt(1.0 - (1.0 - m) ** 2)
    return np.maximum(np.maximum(a - lat, med - a), np.maximum(v - _diaphragm(a, right, g), g.apex - v))


def _diaphragm(a: np.ndarray, right: np.ndarray, g: _Lungs) -> np.ndarray:
    """v of the hemidiaphragms: domes peaking at |u| = 0.16, falling steeply into the costophrenic angles."""
    base = np.where(right, np.float32(g.base_r), np.float32(g.base_l))
    peak = np.where(right, np.float32(g.peak_r), np.float32(g.peak_l))
    k = 0.16
    t_out = np.clip((a - k) / (g.lateral * 1.03 - k), 0.0, 1.2)
    t_in = np.clip((k - a) / k, 0.0, 1.0)
    return peak + (base - peak) * np.where(a > k, t_out**2.4, 0.3 * t_in**2)


def _view_setup(findings: dict, rng: np.random.Generator, size: int, height: int | None, anatomy):
    """Independent streams (anatomy, pose/exposure, texture/noise, finding details), the anatomy, the image size
    and the completed findings: shared by every view so one study's views agree."""
    s_anat, s_pose, s_tex, s_find = (np.random.default_rng(int(x)) for x in rng.integers(0, 2**63 - 1, 4))
    A = anatomy if anatomy is not None else sample_anatomy(s_anat)
    if height is None:
        height = round(size * s_pose.uniform(1.12, 1.3))
    return A, complete_details(findings, s_find), s_pose, s_tex, s_find, int(size), int(height)


def render_pa(
    findings: dict[str, int],
    rng: np.random.Generator,
    size: int,
    height: int | None = None,
    anatomy: Anatomy | None = None,
    ap: bool = False,
) -> np.ndarray:
    """A frontal chest radiograph (uint8, ``height`` x ``size``) showing ``findings``.

    ``findings`` maps :data:`FINDING_COLUMNS` to severities 0..3 (missing = 0) and may fix the
    :data:`DETAIL_KEYS`. The generator is split into independent streams (anatomy, pose/exposure,
    texture/noise, finding details), so the same generator state with and without a finding gives
    the same picture apart from that finding. ``height`` defaults to about 1.2 x ``size``.
    ``ap`` renders the portable AP look (magnified heart, lower lung volumes, flatter clavicles).
    """
    A, f, s_pose, s_tex, s_find, w, h = _view_setup(findings, rng, size, height, anatomy)
    pose = _Pose(
        angle=float(s_pose.normal(0.0, 0.03)),
        du=float(s_pose.uniform(-0.025, 0.025)),
        dv=float(s_pose.uniform(-0.025, 0.025)),
        zoom=float(s_pose.uniform(0.95, 1.04)),
        center=h / (2 * w),
        ref=0.6,
    )
    inspiration = float(s_pose.normal(0.0, 0.012)) - (0.045 if ap else 0.0)
    exposure = s_pose.uniform(size=4)
    ua, va = _grid(w, h, pose)
    fr = _Frame(ua, va, np.abs(ua), ua < 0, w, h)
    base_r = A.base + inspiration
    g = _Lungs(
        apex=A.apex + (0.015 if ap else 0.0),
        apex_a=A.lung_center - 0.05,
        lateral=A.lung_center + A.lung_half,
        base_r=base_r,
        base_l=base_r + A.left_drop * 0.6,
        peak_r=base_r - A.dome,
        peak_l=base_r - A.dome + A.left_drop,
    )
    lung_px = _distance_px(_lung_implicit(fr.a, fr.va, fr.right, g))
    lung = np.clip(0.5 - lung_px / 1.8, 0.0, 1.0)

    heart, medi, heart_geo = _heart_and_mediastinum(fr, g, A, f["cardiomegaly"], s_find, ap)
    fluid, opacity = _effusion_consolidation_nodule(fr, g, f, s_find, heart_geo)
    pleural_space, pleural_line = _pneumothorax(fr, g, f, lung, lung_px)

    # Body: flat-topped elliptic thickness, narrowing to the neck, shoulders at the top corners.
    half_body = (
        A.neck_half + (A.body_half - A.neck_half) * _smoothstep(fr.va, -0.02, A.shoulder + 0.05) ** 0.7
    )
    half_body *= 1.0 - 0.06 * np.clip((fr.va - 0.55) / 0.6, 0.0, 1.0) ** 2  # waist
    body = np.sqrt(np.clip(1.0 - (fr.a / half_body) ** 6, 0.0, 1.0))
    body *= np.clip(0.5 - (fr.a - half_body) * (w / 1.5), 0.0, 1.0)

    # Lung texture: vessels radiating from the hila, broken up and fading to the periphery; fine mottle.
    warp = _smooth_noise(s_tex, (h, w), 12)
    breaks = _smooth_noise(s_tex, (h, w), 24)
    mottle = _smooth_noise(s_tex, (h, w), 48)
    hil_v = np.where(fr.right, np.float32(g.apex + 0.3), np.float32(g.apex + 0.285))
    dx, dy = fr.a - 0.095, fr.va - hil_v
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx) + 0.3 * warp + np.where(fr.right, np.float32(0.0), np.float32(0.37))
    fam1 = np.maximum(np.cos(17.0 * theta), 0.0) ** 6
    fam2 = np.maximum(np.cos(31.0 * theta + 1.3), 0.0) ** 8 * _smoothstep(r, 0.05, 0.13)
    vessels = (fam1 + 0.7 * fam2) * np.exp(-r / 0.14) * np.clip(0.6 + 0.8 * breaks, 0.0, 1.0)
    hilum = np.exp(-((dx / 0.035) ** 2 + (dy / 0.065) ** 2))
    t_lung = (fr.va - g.apex) / (g.base_r - g.apex)
    parenchyma = 0.05 + 0.16 * vessels + 0.02 * mottle + 0.15 * hilum + 0.07 * np.exp(-((t_lung / 0.12) ** 2))

    depth = _smoothstep(-lung_px / w, 0.0, 0.07)  # lungs are thinner towards their edges
    air = lung * (0.65 + 0.35 * depth) * (1.0 - medi) * (1.0 - 0.85 * heart)
    air *= (1.0 - fluid) * (1.0 - opacity)
    air = air + 0.25 * pleural_space
    tissue = parenchyma * (1.0 - pleural_space) * (1.0 - fluid) * lung * (1.0 - medi)

    bone = _bones(fr, g, A, lung, ap)
    trachea, bubble, breast = _soft_tissue_extras(fr, g, A)
    dev = _draw_devices(f["devices"] if f["support_devices"] else 0, w, h, pose, g, heart_geo)
    above_dia = _smoothstep(_diaphragm(fr.a, fr.right, g) - fr.va, -0.004, 0.006)

    atten = (
        0.8 * body * (1.0 - 0.45 * bubble)
        - 0.5 * air
        + tissue
        + 0.06 * heart * above_dia
        + 0.04 * medi
        - 0.07 * trachea * medi
        + bone * (0.5 + 0.5 * body)
        + 0.08 * breast
        + 0.05 * fluid * lung
        + 0.25 * pleural_line
        + dev
    )
    return _expose(atten, exposure, s_tex, w, h)


@dataclass(frozen=True)
class _HeartGeo:
    cu: float  # centre
    cv: float
    hx: float  # half of the horizontal extent


def _heart_and_mediastinum(
    fr: _Frame, g: _Lungs, A: Anatomy, severity: int, rng: np.random.Generator, ap: bool
) -> tuple[np.ndarray, np.ndarray, _HeartGeo]:
    """Heart silhouette sized by the cardiothoracic ratio, about 2/3 of it on the patient's left.

    The left border is a long convex arc from the mediastinum down to the apex on the left dome, the
    right border a shorter arc; below their widest points both run down into the diaphragm, so the
    heart rests on it instead of floating above the lung bases.
    """
    lo, hi = _CTR[min(severity, 3)]
    drawn = rng.uniform(lo, hi) if severity else rng.uniform()  # one draw either way
    ctr = (drawn if severity else A.ctr) + (0.04 if ap else 0.0)
    hx = ctr * g.lateral * 1.03  # CTR x thoracic width / 2
    r_left, r_right = 1.3 * hx, 0.7 * hx
    grow = 1.0 + 1.2 * max(ctr - A.ctr, 0.0)
    ry_left, ry_right = A.heart_height * grow, 0.6 * A.heart_height * grow
    v_left, v_right = g.peak_l - 0.015, g.peak_r + 0.005
    up_l = np.clip((v_left - fr.va) / ry_left, 0.0, 1.0)
    down_l = np.clip((fr.va - v_left) / 0.12, 0.0, 1.0)
    x_left = r_left * np.sqrt(1.0 - up_l * up_l) * (1.0 - 0.6 * down_l * down_l)
    up_r = np.clip((v_right - fr.va) / ry_right, 0.0, 1.0)
    x_right = -r_right * np.sqrt(1.0 - up_r * up_r)
    f = np.maximum(np.maximum(x_right - fr.ua, fr.ua - x_left), v_left - ry_left - fr.va)
    heart = np.clip(0.5 - _distance_px(f) / 1.5, 0.0, 1.0)
    cu, cv = 0.5 * (r_left - r_right), v_left
    # Upper mediastinum: narrow at the thoracic inlet, aortic knob on the patient's left.
    knob_v = g.apex + 0.17
    knob = A.knob * np.exp(-(((fr.va - knob_v) / 0.035) ** 2))
    trunk = 0.6 * A.knob * _smoothstep(fr.va, knob_v, knob_v + 0.08)  # pulmonary trunk down to the heart
    left_bulge = (knob + trunk) * (~fr.right)
    half = A.mediastinum * (0.85 + 0.35 * np.clip((fr.va - g.apex) / 0.35, 0.0, 1.0)) + left_bulge
    medi = np.clip(0.5 - (fr.a - half) * (fr.w / 2.5), 0.0, 1.0)
    return heart, medi, _HeartGeo(float(cu), float(cv), float(hx))


def _effusion_consolidation_nodule(
    fr: _Frame, g: _Lungs, f: dict[str, int], rng: np.random.Generator, heart: _HeartGeo
) -> tuple[np.ndarray, np.ndarray]:
    """Water-density findings: pleural fluid (with a meniscus) and airspace / nodular opacity."""
    h, w = fr.h, fr.w
    fluid = np.zeros((h, w), np.float32)
    for side, key in ((True, "pleural_effusion_right"), (False, "pleural_effusion_left")):
        sev = min(f[key], 3)
        if not sev:
            continue
        base = g.base_r if side else g.base_l
        level = base - _EFFUSION_HEIGHT[sev] * (base - g.apex)
        reach = np.clip((fr.a - 0.05) / (g.lateral - 0.05), 0.0, 1.0)
        top = level - (0.05 + 0.025 * sev) * reach**2.5  # meniscus: higher along the lateral wall
        layer = _smoothstep(fr.va, top - 0.005, top + 0.03 + 0.01 * sev)
        fluid = np.maximum(fluid, layer * (fr.right if side else ~fr.right))
    opacity = np.zeros((h, w), np.float32)
    zone_v = (g.apex + 0.12, g.apex + 0.4, g.peak_r - 0.06)
    patch = _smooth_noise(rng, (h, w), 16)
    for side, key in ((True, "consolidation_right"), (False, "consolidation_left")):
        sev, zone = min(f[key], 3), f[f"{key}_zone"]
        if not sev:
            continue
        rad = _CONSOLIDATION_RADIUS[sev]
        if zone == 1:  # right middle lobe / lingula: against the heart border
            cu = max(0.14, heart.hx * (1.3 if not side else 0.7)) + 0.01
        else:
            cu = g.lateral - (0.09 if zone == 0 else 0.065) - 0.4 * rad
            if not side and zone == 2:
                cu = min(max(cu, heart.cu + heart.hx + 0.2 * rad), g.lateral - 0.04)
        cv = zone_v[zone] + (0.06 if zone == 1 else 0.0) + (0.05 if zone == 0 else 0.0)
        cu = -cu if side else cu
        blob = np.exp(-((((fr.ua - cu) / (rad * 1.15)) ** 2 + ((fr.va - cv) / rad) ** 2) ** 1.5))
        dens = np.clip(0.75 + 0.45 * patch, 0.2, 1.0) * blob * (0.78 + 0.07 * sev)
        opacity = np.maximum(opacity, dens * (fr.right if side else ~fr.right))
    sev = min(f["nodule"], 3)
    frac, jitter, lobes = rng.uniform(0.35, 0.75), rng.uniform(-0.03, 0.03), rng.uniform(0, 2 * np.pi, 2)
    if sev:
        rad = _NODULE_RADIUS[sev]
        nu = 0.06 + frac * (g.lateral - 0.06 - rad)
        if f["nodule_side"] == 1 and f["nodule_zone"] == 2:  # stay lateral of the heart
            nu = max(nu, min(heart.cu + heart.hx + rad, g.lateral - 1.5 * rad))
        nu = -nu if f["nodule_side"] == 0 else nu
        ndx, ndy = fr.ua - nu, fr.va - (zone_v[f["nodule_zone"]] + jitter)
        radius = rad
        if sev == 3:  # a mass: lobulated outline
            ang = np.arctan2(ndy, ndx)
            radius = rad * (1.0 + 0.12 * np.cos(3 * ang + lobes[0]) + 0.07 * np.cos(5 * ang + lobes[1]))
        nodule = _tube(np.sqrt(ndx * ndx + ndy * ndy) / radius) ** 0.4
        opacity = np.maximum(opacity, 0.95 * nodule)
    return fluid, opacity


def _pneumothorax(
    fr: _Frame, g: _Lungs, f: dict[str, int], lung: np.ndarray, lung_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The lung shrinks towards its base and hilum, leaving air without markings and a pleural line."""
    space = np.zeros((fr.h, fr.w), np.float32)
    line = np.zeros((fr.h, fr.w), np.float32)
    for side, key in ((True, "pneumothorax_right"), (False, "pneumothorax_left")):
        sev = min(f[key], 3)
        if not sev:
            continue
        sc = _PTX_SCALE[sev]
        pa, pv = 0.05, (g.base_r if side else g.base_l) - 0.03
        collapsed = _distance_px(_lung_implicit(pa + (fr.a - pa) / sc, pv + (fr.va - pv) / sc, fr.right, g))
        side_mask = fr.right if side else ~fr.right
        space = np.maximum(space, lung * np.clip(0.5 + collapsed / 1.2, 0.0, 1.0) * side_mask)
        visible = (lung_px < -1.5) & (fr.va < pv - 0.04)
        line = np.maximum(line, np.exp(-((collapsed / 0.8) ** 2)) * visible * side_mask)
    return space, line


def _bones(fr: _Frame, g: _Lungs, A: Anatomy, lung: np.ndarray, ap: bool) -> np.ndarray:
    """Posterior ribs (arches), faint anterior ribs, clavicles, spine and humeral heads."""
    a, va = fr.a, fr.va
    arch = np.where(a < 0.12, 3.0 * (a - 0.12) ** 2, 2.1 * (a - 0.12) ** 2)
    s0, s1 = A.rib_spacing, 0.004
    wpos = np.maximum(va - arch - (g.apex - 0.045) + A.rib_offset * s0 * 0.3, 0.0)
    k = (np.sqrt(s0 * s0 + 2 * s1 * wpos) - s0) / s1
    frac = k - np.floor(k)
    x = (frac - 0.23) / 0.23
    rib = _tube(x) - 0.6 * _tube(x / 0.7)  # cortical shell brighter than the marrow
    lat = g.lateral * 1.04
    reach = _smoothstep(a, 0.025, 0.06) * (1.0 - _smoothstep(a, lat + 0.01, lat + 0.06))
    posterior = (
        rib * reach * (0.35 + 0.65 * lung) * (k < 10.6) * (1.0 - _smoothstep(va, g.peak_r, g.base_r + 0.08))
    )
    want = va + 0.45 * a - 0.4 * (a - 0.25) ** 2 - g.apex + 0.02
    ka = want / (s0 * 1.3) + 0.5
    fa = ka - np.floor(ka)
    anterior = (
        _tube((fa - 0.2) / 0.2) * _smoothstep(a, 0.1, 0.2) * (1.0 - _smoothstep(a, lat - 0.02, lat + 0.03))
    )
    anterior *= (ka > 1.0) * (ka < 6.5)
    v0 = g.apex + 0.05 - (0.025 if ap else 0.0)
    centre = v0 - (0.08 if ap else 0.17) * (a - 0.05) + 0.016 * np.sin(np.pi * (a - 0.05) / 0.3)
    clav = _tube((va - centre) / 0.019) * _smoothstep(a, 0.035, 0.06) * (1.0 - _smoothstep(a, 0.32, 0.37))
    spine = _tube(fr.ua / (0.03 + 0.018 * np.clip(va, 0.0, 1.2)))
    period = 0.045 + 0.012 * np.clip(va, 0.0, 1.2)
    spine *= 1.0 - 0.5 * _smoothstep(np.abs((va / period) % 1.0 - 0.5), 0.36, 0.46)
    hum = _tube(np.sqrt((a - (A.body_half + 0.005)) ** 2 + (va - A.shoulder - 0.02) ** 2) / 0.065)
    return 0.11 * posterior + 0.05 * anterior + 0.26 * clav + 0.07 * spine + 0.22 * hum


def _soft_tissue_extras(fr: _Frame, g: _Lungs, A: Anatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Air in the trachea and main bronchi, the gastric bubble, breast shadows."""
    ua, va = fr.ua, fr.va
    carina = g.apex + 0.23
    trachea = _tube(ua / 0.019) * (1.0 - _smoothstep(va, carina - 0.01, carina + 0.01))
    for sgn, ang in ((-1.0, 0.62), (1.0, 0.8)):  # right main bronchus steeper and shorter
        t = np.clip((ua * sgn * np.cos(ang) + (va - carina) * np.sin(ang)) / 0.08, 0.0, 1.0)
        pu, pv = sgn * t * 0.08 * np.cos(ang), carina + t * 0.08 * np.sin(ang)
        dist = np.sqrt((ua - pu) ** 2 + (va - pv) ** 2)
        trachea = np.maximum(trachea, _tube(dist / 0.013) * (t < 0.98))
    bv = g.peak_l + 0.065
    bubble = np.clip(
        0.5 - (np.sqrt(((ua - 0.16) / 0.06) ** 2 + ((va - bv) / 0.035) ** 2) - 1.0) * 8, 0.0, 1.0
    )
    bubble *= 1.0 - _smoothstep(va, bv + 0.005, bv + 0.015)  # air above a flat fluid level
    if not A.female:
        return trachea, bubble, np.zeros_like(ua)
    bd = np.sqrt(((fr.a - 0.28) / 0.17) ** 2 + ((va - (g.base_r - 0.1)) / 0.13) ** 2)
    breast = np.clip(0.5 - (bd - 1.0) * 6, 0.0, 1.0) * _smoothstep(va, g.base_r - 0.25, g.base_r - 0.1)
    return trachea, bubble, breast


def _expose(atten: np.ndarray, knobs: np.ndarray, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Film response, exposure variation, low-frequency non-uniformity and quantum noise -> uint8."""
    gamma = 1.2 + 0.4 * (knobs[0] - 0.5)
    level = 0.97 + 0.1 * (knobs[1] - 0.5)
    x = np.maximum(gaussian_filter(atten, 0.35 + w / 600.0, truncate=2.5) / level, 0.0)
    img = (x / (1.0 + x**6) ** (1.0 / 6.0)) ** gamma  # soft shoulder instead of hard clipping
    img = 0.02 + 0.03 * knobs[2] + 0.95 * img
    heel = _smooth_noise(rng, (h, w), 3)
    img = img * (1.0 + 0.035 * heel)
    # per-pixel noise grows with resolution (a downscaled radiograph is smoother)
    sigma = (0.008 + 0.014 * knobs[3]) * np.sqrt(min(w, 1024) / 256.0)
    img = img + sigma * rng.standard_normal((h, w), dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _draw_devices(mask: int, w: int, h: int, pose: _Pose, g: _Lungs, heart: _HeartGeo) -> np.ndarray | float:
    """Tubes, lines and a pacemaker as bright (metal / contrast) strokes, drawn with PIL then blurred."""
    if not mask:
        return 0.0
    carina = g.apex + 0.23
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    thin = max(1, round(w * 0.006))
    if mask & DEVICE_ETT:
        pts = _to_pixels(_bezier((0.0, -0.05), (0.004, 0.15), (0.0, carina - 0.05)), w, pose)
        draw.line(pts, fill=110, width=max(2, round(w * 0.022)), joint="curve")
        draw.line(pts, fill=255, width=thin, joint="curve")
    if mask & DEVICE_LINE:  # right internal jugular catheter ending in the SVC
        pts = _bezier((-0.12, -0.05), (-0.09, 0.2), (-0.02, 0.24), (-0.035, carina + 0.02))
        draw.line(_to_pixels(pts, w, pose), fill=230, width=thin, joint="curve")
    if mask & DEVICE_PACEMAKER:  # left chest wall generator, lead through the SVC into the RV apex
        gu, gv = 0.27, g.apex + 0.08
        box = np.array([(gu - 0.05, gv - 0.032), (gu + 0.05, gv - 0.032), (gu + 0.05, gv + 0.032),
                        (gu - 0.05, gv + 0.032)])  # fmt: skip
        draw.polygon(_to_pixels(box, w, pose), fill=255)
        rv = (heart.cu + 0.45 * heart.hx, heart.cv + 0.05)
        pts = _bezier((gu - 0.04, gv), (0.05, gv - 0.05), (-0.04, carina), (-0.07, heart.cv - 0.02), rv, n=32)
        draw.line(_to_pixels(pts, w, pose), fill=240, width=thin, joint="curve")
    if mask & DEVICE_NG:  # nasogastric tube down the oesophagus into the stomach
        pts = _bezier((0.01, -0.05), (0.03, 0.6), (0.02, g.peak_l + 0.05), (0.2, g.peak_l + 0.1), n=32)
        draw.line(_to_pixels(pts, w, pose), fill=200, width=max(1, round(w * 0.008)), joint="curve")
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(0.5, w / 400)))
    return np.asarray(canvas, dtype=np.float32) * np.float32(0.55 / 255.0)


# ---------------------------------------------------------------------------------------------
# Lateral view (cheap: prepare drops it; heart size, effusion and tubes are drawn)
# ---------------------------------------------------------------------------------------------


def render_lateral(
    findings: dict[str, int],
    rng: np.random.Generator,
    size: int,
    height: int | None = None,
    anatomy: Anatomy | None = None,
) -> np.ndarray:
    """A lateral projection (uint8, ``height`` x ``size``): anterior on the image left, spine on the right.

    Cheap on purpose (``prepare`` keeps PA only): heart size, pleural fluid in the posterior sulcus and
    tubes follow the findings; pneumothorax, nodule and consolidation are not drawn.
    """
    A, f, s_pose, s_tex, s_find, w, h = _view_setup(findings, rng, size, height, anatomy)
    pose = _Pose(
        float(s_pose.normal(0, 0.03)), float(s_pose.uniform(-0.03, 0.03)), 0.0, 1.0, h / (2 * w), 0.6
    )
    ua, va = _grid(w, h, pose)
    px = np.float32(w / 1.5)
    apex, base = A.apex - 0.02, A.base + 0.03

    front = -0.34 - 0.06 * np.clip((va - 0.25) / 0.6, 0.0, 1.0) ** 0.5
    back = 0.4 - 0.05 * ((va - 0.7) / 0.6) ** 2
    neck = _smoothstep(va, 0.0, 0.2)
    front = front * (0.45 + 0.55 * neck)
    body = np.clip(0.5 - (np.maximum(front - ua, ua - back)) * px, 0.0, 1.0)
    arms = np.exp(-(((ua / 0.32) ** 2 + ((va - 0.1) / 0.16) ** 2) ** 2))

    t = np.clip((va - apex) / (base - apex), 0.0, 1.0)
    lung_front = -0.08 - 0.2 * np.sqrt(1.0 - (1.0 - np.clip(t / 0.6, 0, 1)) ** 2)
    lung_back = 0.02 + 0.24 * np.sqrt(1.0 - (1.0 - np.clip(t / 0.45, 0, 1)) ** 2)
    dia = base - A.dome + 0.12 * ((ua + 0.3) / 0.5) ** 2 - 0.08  # domes rise anteriorly
    dia = np.maximum(dia, base - A.dome - 0.1)
    lung_f = np.maximum(np.maximum(lung_front - ua, ua - lung_back), np.maximum(va - dia, apex - va))
    lung = np.clip(0.5 - _distance_px(lung_f) / 2.0, 0.0, 1.0)

    ctr = A.ctr if not f["cardiomegaly"] else float(np.mean(_CTR[min(f["cardiomegaly"], 3)]))
    hr = 0.15 * ctr / 0.45  # the heart sits anteriorly on the diaphragm and grows backwards and up
    hu, hv = ua + 0.1 - 0.5 * (hr - 0.15), va - (base - A.dome - 0.03)
    heart_f = np.sqrt((hu / (1.15 * hr)) ** 2 + (hv / (0.9 * hr)) ** 2) - 1.0
    heart = np.clip(0.5 - heart_f * hr * px, 0.0, 1.0)
    above = _smoothstep(dia - va, -0.005, 0.01)

    su = 0.22 + 0.04 * np.sin(np.pi * np.clip(va, 0.0, 1.2) / 1.2)  # kyphosis
    period = 0.06
    disc = _smoothstep(np.abs(((va / period) % 1.0) - 0.5), 0.36, 0.46)
    spine = np.clip(0.5 - (np.abs(ua - su) - 0.045) * px, 0.0, 1.0) * (1.0 - 0.6 * disc)
    sternum = _tube((ua - front - 0.02) / 0.012) * (va > apex + 0.04) * (va < apex + 0.42)
    trachea = _tube((ua - 0.02 * va / 0.4) / 0.02) * (1.0 - _smoothstep(va, apex + 0.22, apex + 0.25))

    fluid = np.zeros((h, w), np.float32)
    eff = max(f["pleural_effusion_left"], f["pleural_effusion_right"])
    if eff:  # fluid collects in the posterior costophrenic sulcus first
        top = base - _EFFUSION_HEIGHT[eff] * (base - apex) - 0.1 * np.clip((ua + 0.1) / 0.3, 0.0, 1.0)
        fluid = _smoothstep(va, top, top + 0.03)
    air = lung * (1.0 - 0.7 * heart) * (1.0 - fluid)
    tex = _smooth_noise(s_tex, (h, w), 30)
    atten = (
        0.8 * body
        + 0.12 * arms * body
        - 0.45 * air
        + lung * (0.06 + 0.02 * tex)
        + 0.06 * heart * above
        + 0.1 * spine
        + 0.12 * sternum
        - 0.08 * trachea
    )
    if f["support_devices"]:
        canvas = Image.new("L", (w, h), 0)
        pts = _bezier((-0.05, -0.05), (-0.02, 0.2), (0.0, apex + 0.18))
        ImageDraw.Draw(canvas).line(_to_pixels(pts, w, pose), fill=255, width=max(1, round(w * 0.008)))
        atten = atten + np.asarray(canvas, dtype=np.float32) * np.float32(0.5 / 255.0)
    return _expose(atten, s_pose.uniform(size=4), s_tex, w, h)
