"""Devices on other hosts through Dask distributed: ``hetero worker`` serves a host's devices
(:mod:`hetero.remote.server`), and :class:`RemoteDevice` drives them as ``HOST/DEVICE`` behind the
Device protocol (:mod:`hetero.remote.client`), so the runtime, profiler and policies use them as
they use local devices."""

from hetero.remote.client import Cluster, RemoteDevice, open_devices

__all__ = ["Cluster", "RemoteDevice", "open_devices"]
