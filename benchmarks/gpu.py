"""The GPU: training loop times, time to 99%, evaluation, serving and DDP on one CUDA device.

Runs where torch sees a CUDA device; elsewhere every row says "not measured" and why. On this project's lent
GPU machines it is run by benchmarks/device/run.sh (see benchmarks/device/README.md), which installs what the
machine lacks and writes the results where they come back.
"""

from __future__ import annotations

from benchmarks.harness import Bench, log, median, timed
from benchmarks.report import row
from benchmarks.serving import CLIENTS, Server, make_payloads, rounds

FIGURES = (
    ("default 5-epoch run, training loop time (s)", "< 10 s"),
    ("experiment=fast, seeds 1-5: training loop time (s), median", "< 3 s, every seed >= 99%"),
    ("10,000 test images: load + predict on the GPU (s)", ""),
    ("/predict, 28x28 PNG, model on the GPU, {clients} client(s) (requests/s)", ""),
    ("trainer=ddp on one GPU, 1 epoch: training loop time (s)", ""),
)


def gpu(bench: Bench) -> list[dict]:
    """On the first CUDA device: the default 5-epoch run's loop time, experiment=fast on seeds 1-5, evaluation of
    the test set, the service with the model on the GPU (1, 8 and 32 clients), and trainer=ddp with one process."""
    import torch

    if not torch.cuda.is_available():
        why = "not measured: no CUDA device here (benchmarks/device/README.md runs it on a lent GPU)"
        log(f"   {why}")
        return [
            row("gpu", name.format(clients=clients), "not measured", target=goal, method=why)
            for name, goal in FIGURES
            for clients in (CLIENTS if "{" in name else (0,))
        ]
    device = torch.cuda.get_device_name(0)
    rows = []

    default = bench.train("gpu_default", ["trainer.max_epochs=5"])
    loop = round(sum(default["metrics"]["epoch_time_s"]), 2)
    log(f"   default 5 epochs on {device}: loop {loop} s, test {default['metrics']['test/acc']:.2%}")
    rows.append(
        row(
            "gpu",
            FIGURES[0][0],
            loop,
            unit="s",
            target=FIGURES[0][1],
            met=loop < 10,
            method=f"{device}; python -m mnist_lightning.train trainer.max_epochs=5 (precision=auto: "
            f"{default['metrics']['precision']}); sum of metrics.json epoch_time_s (training and validation); "
            f"test accuracy {default['metrics']['test/acc']:.2%}, whole process {default['wall_s']:.1f} s",
            runs={"epoch_time_s": default["metrics"]["epoch_time_s"]},
        )
    )
    bench.checkpoint = default["run_dir"] / default["metrics"]["best_checkpoint"]

    seeds = (1,) if bench.quick else (1, 2, 3, 4, 5)
    fast = []
    for seed in seeds:
        metrics = bench.train(f"gpu_fast_{seed}", ["experiment=fast", f"seed={seed}"])["metrics"]
        fast.append({"seed": seed, "loop_s": round(sum(metrics["epoch_time_s"]), 2), "test_acc": metrics["test/acc"]})
        log(f"   fast {fast[-1]}")
    fast_loop = median([r["loop_s"] for r in fast])
    rows.append(
        row(
            "gpu",
            FIGURES[1][0],
            fast_loop,
            unit="s",
            target=FIGURES[1][1],
            met=fast_loop < 3 and min(r["test_acc"] for r in fast) >= 0.99,
            method=f"{device}; experiment=fast seed=N: "
            + ", ".join(f"seed {r['seed']} {r['test_acc']:.2%} in {r['loop_s']} s" for r in fast),
            runs={"ours": fast},
        )
    )

    rows.append(evaluation_on_gpu(bench, device))
    rows += serving_on_gpu(bench, device)

    ddp = bench.train("gpu_ddp", ["trainer=ddp", "trainer.devices=1", "trainer.max_epochs=1"])
    ddp_loop = round(sum(ddp["metrics"]["epoch_time_s"]), 2)
    log(f"   ddp on one GPU: loop {ddp_loop} s, test {ddp['metrics']['test/acc']:.2%}")
    rows.append(
        row(
            "gpu",
            FIGURES[4][0],
            ddp_loop,
            round(default["metrics"]["epoch_time_s"][0], 2),
            unit="s",
            method=f"{device}; trainer=ddp trainer.devices=1 trainer.max_epochs=1 against the default run's first "
            f"epoch; test accuracy {ddp['metrics']['test/acc']:.2%}, world size {ddp['metrics']['world_size']}",
            runs={"epoch_time_s": ddp["metrics"]["epoch_time_s"]},
        )
    )
    return rows


def evaluation_on_gpu(bench: Bench, device: str) -> dict:
    import torch

    from mnist_lightning.data.datamodule import MNISTDataModule
    from mnist_lightning.inference.model import LoadedModel
    from mnist_lightning.inference.torch_runtime import logits_in_batches

    network = LoadedModel.load(bench.checkpoint, "torch", "cuda").network
    batch = MNISTDataModule(str(bench.data_dir)).eval_batch_size_for("cuda")

    def ours() -> None:
        datamodule = MNISTDataModule(str(bench.data_dir), download=False)
        datamodule.setup("test")
        logits_in_batches(network, datamodule.test_set.images, batch, torch.device("cuda"))
        torch.cuda.synchronize()

    ours()  # CUDA's first call sets up its kernels
    times = [round(timed(ours), 3) for _ in range(max(bench.repeats, 3))]
    log(f"   evaluation on {device}: {times}")
    return row(
        "gpu",
        FIGURES[2][0],
        median(times),
        unit="s",
        method=f"{device}; MNISTDataModule.setup('test') + logits_in_batches in batches of {batch}, after a warm-up; "
        f"median of {len(times)}",
        runs={"ours": times},
    )


def serving_on_gpu(bench: Bench, device: str) -> list[dict]:
    checkpoint = bench.exported_checkpoint()
    payload = make_payloads(bench)["28x28 PNG"]
    seconds = 0.5 if bench.quick else 3.0
    rows = []
    with Server(bench, checkpoint, ["runtime=torch", "device=cuda"], "gpu") as port:
        for clients in CLIENTS:
            figures = rounds(port, payload, clients, seconds, bench)
            rate, p50 = figures["rate"], figures["p50"]
            log(f"   serving on {device}, {clients} client(s): {rate:.0f} req/s, p50 {p50:.2f} ms")
            rows.append(
                row(
                    "gpu",
                    FIGURES[3][0].format(clients=clients),
                    round(rate, 1),
                    unit="req/s",
                    better="higher",
                    method=f"{device}; serve runtime=torch device=cuda, micro-batching on; as the serving rows "
                    f"(p50 {p50:.2f} ms)",
                    runs={"ours": figures["rounds"]},
                )
            )
    return rows
