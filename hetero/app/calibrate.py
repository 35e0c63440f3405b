"""``hetero profile --update-calibration P.json --devices a,b``: re-measure a profile's runtime
calibrations (hand-offs, wake-up, contention; hetero.cost.calibration) on these devices and
rewrite the file atomically, keeping its op entries and links."""

from __future__ import annotations

import logging

from hetero.cost.calibration import update_calibration
from hetero.cost.profile import Profile, load_profile, save_profile

log = logging.getLogger(__name__)


def update_profile_calibration(path: str, device_names: list[str], model: str | None = None) -> Profile:
    """Measure and write; ``model`` gives the probe ops (default: builtin:seed-cnn, the same small
    model for every profile, so the calibration does not depend on the model profiled)."""
    from hetero.cost.calibration import PROBE_MODEL
    from hetero.quant.precision import load_for_precision
    from hetero.remote import open_devices

    profile = load_profile(path)
    graph = load_for_precision(model or PROBE_MODEL, profile.precision)
    devices = list(open_devices(device_names, None).values())
    updated = update_calibration(profile, path, devices, graph)
    save_profile(updated, path)
    return updated
