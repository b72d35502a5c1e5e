"""The load test's figure: latency (p50, p95) and throughput against users, every target
on one figure, with the SLO and the saturation points marked."""

from __future__ import annotations

from pathlib import Path

from nasprune.deploy.loadtest.stats import TargetResult


def plot(results: list[TargetResult], slo_ms: float, path: Path) -> None:
    """Latency (p50 solid, p95 dashed) and throughput vs. users, all targets on one figure."""
    import matplotlib.pyplot as plt

    fig = figure(results, slo_ms)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(results: list[TargetResult], slo_ms: float):
    """The figure ``plot`` saves (integer user ticks; the saturation caption only when a
    target saturated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, result in enumerate(results):
        color = f"C{i}"
        users = [s.users for s in result.steps]
        lat.plot(users, [s.p50_ms for s in result.steps], "o-", color=color,
                 label=f"{result.name} p50")
        lat.plot(users, [s.p95_ms for s in result.steps], "s--", color=color,
                 label=f"{result.name} p95")
        thr.plot(users, [s.ok_rps for s in result.steps], "o-", color=color, label=result.name)
        if result.saturation_users is not None:
            for axis in (lat, thr):
                axis.axvline(result.saturation_users, color=color, linestyle=":", alpha=0.7)
    lat.axhline(slo_ms, color="grey", linestyle="-.", linewidth=1, label=f"SLO {slo_ms:g} ms")
    lat.set(xlabel="concurrent users", ylabel="response time (ms)",
            title="Response time vs. users")
    thr.set(xlabel="concurrent users", ylabel="successful requests / s",
            title="Throughput vs. users")
    for axis in (lat, thr):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # users are whole numbers
    lat.set_yscale("log")
    if any(r.saturation_users is not None for r in results):
        fig.suptitle("dotted lines: saturation point (p95 > SLO or > 1 % failures)",
                     fontsize=9)
    fig.tight_layout()
    return fig
