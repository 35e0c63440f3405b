"""Policies on their own, driven by hand the way a runtime would drive them (no simulator)."""

from __future__ import annotations

import pytest

from hetero.cost.protocol import Link, TableCostModel
from hetero.errors import DeviceError, InputError
from hetero.policy import (POLICIES, Estimates, ObservedCost, PolicyContext, binding_memory, make_policy)
from workloads import chain


def context(algorithm: str = "heft") -> PolicyContext:
    """Four chained tasks on two equal GPUs and a slow CPU host."""
    graph = chain(4)
    compute = {f"t{i}": {"cpu": 10.0, "gpu0": 1.0, "gpu1": 1.0} for i in range(4)}
    links = [Link("cpu", "gpu0", 0.01, 1e9), Link("cpu", "gpu1", 0.01, 1e9), Link("gpu0", "gpu1", 0.01, 1e9)]
    return PolicyContext(graph, TableCostModel(["cpu", "gpu0", "gpu1"], compute, links, host="cpu"), algorithm)


def devices_used(schedule) -> set[str]:
    return set(schedule.placement.values())


def test_observed_cost_scales_compute_and_routes():
    base = context().cost
    cost = ObservedCost(base, {"gpu0": 3.0}, ["cpu", "gpu0"], {("cpu", "gpu0"): 2.0})
    assert cost.devices == ("cpu", "gpu0")
    assert cost.compute("t0", "gpu0") == 3.0 and cost.compute("t0", "cpu") == 10.0
    assert cost.transfer(1000, "cpu", "gpu0") == pytest.approx(2 * base.transfer(1000, "cpu", "gpu0"))
    assert cost.transfer_coefficients("cpu", "gpu0") == pytest.approx((0.02, 2e-9))
    assert cost.compute_table(["t0"], ["cpu", "gpu0"]) == [[10.0, 3.0]]


def test_estimates_weigh_by_duration_and_go_stale():
    estimates = Estimates(alpha=0.5, stale_s=1.0)
    assert estimates.ratio("gpu0", 0.0) == 1.0
    estimates.observe("gpu0", 2.0, 1.0, now_s=0.0)
    estimates.observe("gpu0", 0.2, 0.1, now_s=0.5)
    assert estimates.ratio("gpu0", 0.5) == pytest.approx(2.0)
    assert estimates.ratio("gpu0", 2.0) == 1.0  # not observed for more than stale_s


def test_static_never_changes_and_fails_with_its_device():
    policy = make_policy("static")
    plans = policy.start(context())
    assert len(plans) == 1 and policy.route(0, 0.0) is plans[0]
    for _ in range(50):
        policy.observe("t0", "gpu0", 100.0, 1.0)
    assert policy.rebalance(10.0) is None
    assert policy.device_failed("gpu0", 11.0) is None
    assert policy.route(1, 11.0) is plans[0]


def test_failover_moves_ops_off_the_failed_device_and_back():
    policy = make_policy("failover")
    (initial,) = policy.start(context())
    used = devices_used(initial)
    assert used <= {"gpu0", "gpu1"}
    failed = sorted(used)[0]
    moved = policy.device_failed(failed, 1.0)
    assert moved is not None and failed not in devices_used(moved) and failed not in moved.devices
    assert policy.route(0, 1.0) is moved
    back = policy.device_recovered(failed, 2.0)  # with every device alive again, the plan is the initial one
    assert back is not None and dict(back.placement) == dict(initial.placement) and failed in back.devices
    assert policy.route(1, 2.0) is back


def test_failover_recovery_of_an_unused_device_keeps_the_plan():
    policy = make_policy("failover")
    (initial,) = policy.start(context())
    (unused,) = {"gpu0", "gpu1"} - devices_used(initial)
    assert policy.device_failed(unused, 1.0) is None  # nothing ran there: no re-plan
    assert policy.device_recovered(unused, 2.0) is None  # the re-plan places every op where it already is
    assert policy.route(0, 2.0) is initial


def test_failover_when_every_device_is_down_says_so():
    policy = make_policy("failover")
    policy.start(context())
    policy.device_failed("gpu0", 1.0)
    policy.device_failed("gpu1", 2.0)
    with pytest.raises(DeviceError, match=r"failover: every device is down \(cpu failed at 3 s\)"):
        policy.device_failed("cpu", 3.0)
    policy.device_recovered("cpu", 4.0)  # the plan on the cpu stands; its weights are reloaded by the driver
    assert devices_used(policy.route(0, 4.0)) == {"cpu"}


def test_threshold_replans_when_observed_times_drift():
    policy = make_policy("threshold", {"drift": 0.5, "cooldown": 1.0, "alpha": 0.5})
    (initial,) = policy.start(context())
    slow = sorted(devices_used(initial))[0]
    for _ in range(5):
        policy.observe("t0", slow, 1.2, 0.5)  # 20%: within the drift
    assert policy.rebalance(2.0) is None
    for _ in range(5):
        policy.observe("t0", slow, 30.0, 2.5)  # 30x slower than predicted
    new = policy.rebalance(2.6)
    assert new is not None and slow not in devices_used(new) and policy.route(0, 3.0) is new
    assert policy.rebalance(3.0) is None  # within the cooldown


def test_periodic_replans_only_on_its_period_and_only_on_change():
    policy = make_policy("periodic", {"period": 1.0})
    (initial,) = policy.start(context())
    slow = sorted(devices_used(initial))[0]
    for _ in range(10):
        policy.observe("t1", slow, 50.0, 0.2)
    assert policy.rebalance(0.5) is None
    new = policy.rebalance(1.0)
    assert new is not None and slow not in devices_used(new)
    assert policy.rebalance(2.5) is None  # same estimates, same placement: nothing to move


def test_least_loaded_spreads_requests_and_avoids_failed_devices():
    policy = make_policy("least-loaded")
    plans = policy.start(context())
    assert {next(iter(devices_used(p))) for p in plans} == {"cpu", "gpu0", "gpu1"}
    routed = [next(iter(devices_used(policy.route(i, 0.0)))) for i in range(4)]
    assert routed[:2] in (["gpu0", "gpu1"], ["gpu1", "gpu0"])
    policy.finished(0, 1.0, 1.0)
    assert next(iter(devices_used(policy.route(10, 1.0)))) == routed[0]
    policy.device_failed("gpu0", 2.0)
    assert all(next(iter(devices_used(policy.route(i, 2.0)))) != "gpu0" for i in range(20, 30))
    with pytest.raises(DeviceError, match="every device is down"):
        policy.device_failed("gpu1", 3.0) or policy.device_failed("cpu", 3.0)


def test_make_policy_rejects_unknown_names_and_parameters():
    with pytest.raises(InputError, match="unknown policy 'magic'"):
        make_policy("magic")
    with pytest.raises(InputError, match=r"policy static: unknown parameter 'period' \(allowed: none\)"):
        make_policy("static", {"period": 1.0})
    assert set(POLICIES) == {"static", "failover", "threshold", "periodic", "least-loaded"}


def test_binding_memory_drops_capacities_that_cannot_bind():
    graph = chain(3)
    for node in graph:
        graph.nodes[node].update(weight_bytes=100, output_bytes=10)
    assert binding_memory(graph, {"a": 1000, "b": 200}) == {"b": 200}


def test_start_from_a_given_plan():
    from hetero.schedulers import schedule

    ctx = context()
    given = schedule(ctx.graph, ctx.cost, "single")
    for name in ("static", "failover", "periodic"):
        assert make_policy(name).start(ctx, given) == (given,)
    assert given not in make_policy("least-loaded").start(ctx, given)
