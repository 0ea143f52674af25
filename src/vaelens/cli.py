"""The ``vaelens`` command line: a thin map from arguments to configs and library calls.

User errors (``VaelensError``) print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, NoReturn, ParamSpec, cast

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vaelens._errors import Interrupted, VaelensError
from vaelens._outputs import check_out_path, claim_output, filesystem_error, released_if_refused

# The library (torch and what it pulls) is imported inside each command, never here: `vaelens --help`,
# `vaelens CMD --help` and a mistyped option then answer without importing torch (a test guards it).
if TYPE_CHECKING:
    from vaelens.evaluation import AuditConfig
    from vaelens.models import ModelConfig
    from vaelens.training import Defence

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Adversarial robustness of VAEs through the local geometry of their encoders.",
)
console = Console()
if not console.is_terminal:  # piped or logged: do not squeeze tables into 80 columns
    console = Console(width=160)
err_console = Console(stderr=True)
P = ParamSpec("P")


def _fail(label: str, message: str, code: int) -> NoReturn:
    err_console.print(Text(f"{label}: ", style="red") + Text(message), soft_wrap=True)
    sys.exit(code)


def _boundary(f: Callable[P, None]) -> Callable[P, None]:
    """The one place where a command's failures become one line and an exit status.

    2: a user error or a file-system fault (the message names the path and the fix); 130: Ctrl-C,
    with what was saved and how to resume. Never a traceback for these.
    """

    @functools.wraps(f)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            f(*args, **kwargs)
        except Interrupted as e:
            _fail("interrupted", str(e).removeprefix("interrupted: "), 130)
        except KeyboardInterrupt:
            _fail("interrupted", "stopped by Ctrl-C; results written so far are complete and kept", 130)
        except VaelensError as e:
            _fail("error", str(e), 2)
        except OSError as e:
            _fail("error", str(filesystem_error(e)), 2)
        except MemoryError:
            _fail("error", "out of memory; lower --batch-size or --n, or use a smaller model", 2)
        except RuntimeError as e:
            if "allocate" not in str(e) and "out of memory" not in str(e).lower():
                raise
            _fail("error", "out of memory; lower --batch-size or --n, or use a smaller model", 2)

    return run


def command(f: Callable[P, None]) -> Callable[P, None]:
    """``@app.command()`` behind the error boundary."""
    return app.command()(_boundary(f))


def _model_config(
    dataset: str,
    model: str,
    latent_dim: int,
    hidden: str,
    channels: str,
    likelihood: str,
    data_root: str | None,
    image_size: int,
    image_channels: int,
) -> ModelConfig:
    from vaelens.models import ModelConfig
    from vaelens.training import input_shape_of

    shape = input_shape_of(dataset, data_root, image_size, image_channels)
    return ModelConfig(
        architecture=model,
        input_shape=shape,
        latent_dim=latent_dim,
        hidden=_int_list(hidden, "--hidden"),
        channels=_int_list(channels, "--channels"),
        likelihood=likelihood,
    )


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise VaelensError(f"{flag} takes comma-separated integers such as 512,256; got {text!r}") from None


def _float_list(text: str, flag: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise VaelensError(f"{flag} takes comma-separated numbers such as 0.25,0.5,1; got {text!r}") from None
    if not values:
        raise VaelensError(f"{flag} needs at least one number")
    return values


@command
def train(
    out: Annotated[Path, typer.Option(help="Run directory (created; an existing run resumes).")],
    dataset: Annotated[
        str, typer.Option(help="mnist-5k, digits, mnist, fashion-mnist, cifar10, celeba or folder:<path>.")
    ] = "mnist-5k",
    model: Annotated[str, typer.Option(help="mlp or conv.")] = "mlp",
    latent_dim: Annotated[int, typer.Option(help="Latent dimension k.")] = 16,
    beta: Annotated[float, typer.Option(help="KL weight (>= 0).")] = 1.0,
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine-annealed).")] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    likelihood: Annotated[str, typer.Option(help="bernoulli or gaussian.")] = "bernoulli",
    warmup_epochs: Annotated[float, typer.Option(help="Linear KL warm-up length.")] = 0.0,
    hidden: Annotated[str, typer.Option(help="MLP hidden widths.")] = "512,256",
    channels: Annotated[str, typer.Option(help="Conv channels per layer.")] = "32,64,128",
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    data_root: Annotated[str | None, typer.Option(help="Download cache directory.")] = None,
    image_size: Annotated[int, typer.Option(help="Side of folder: images.")] = 64,
    image_channels: Annotated[int, typer.Option(help="1 or 3, for folder: images.")] = 3,
    defence: Annotated[
        str,
        typer.Option(
            help="none, mixup (docs/method.md s. 6), adversarial (PGD training, s. 6.4) or noise (Gaussian input "
            "noise, s. 6.6)."
        ),
    ] = "none",
    mixup: Annotated[bool, typer.Option("--mixup", help="Alias of --defence mixup.")] = False,
    mixup_alpha: Annotated[float, typer.Option(help="a of the Beta(a, a) mixing weight.")] = 0.5,
    mixup_per_sample: Annotated[
        bool, typer.Option("--mixup-per-sample", help="One mixing weight per sample, not per batch.")
    ] = False,
    mixup_weights: Annotated[str, typer.Option(help="Weights of the KL, recon and latent mixup terms.")] = "1,1,1",
    mixup_target: Annotated[
        str, typer.Option(help="Mixup latent target: mean (mu(x_mix)) or sample (released code).")
    ] = "mean",
    adv_eps: Annotated[float, typer.Option(help="L2 budget of adversarial training's inner PGD.")] = 1.0,
    adv_steps: Annotated[int, typer.Option(help="PGD steps of adversarial training.")] = 5,
    adv_weight: Annotated[float, typer.Option(help="Weight of the adversarial ELBO term.")] = 1.0,
    noise_sigma: Annotated[float, typer.Option(help="Standard deviation of --defence noise's input noise.")] = 0.25,
    save_epochs: Annotated[
        str, typer.Option(help="Also keep the weights after these epochs (e.g. 5,10,20), for RUN@N.")
    ] = "",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a beta-VAE and write config, checkpoints and per-epoch metrics into OUT."""
    from vaelens.training import TrainConfig
    from vaelens.training import train as run_training

    if mixup and defence not in ("none", "mixup"):
        raise VaelensError(f"--mixup is --defence mixup; it cannot be combined with --defence {defence}")
    if mixup_target not in ("mean", "sample"):  # checked even without mixup: a typo is never ignored
        raise VaelensError(f"--mixup-target must be mean or sample; got {mixup_target!r}")
    options = {"mixup": (mixup_alpha, mixup_per_sample, mixup_weights, mixup_target), "noise": (noise_sigma,),
               "adversarial": (adv_eps, adv_steps, adv_weight)}  # fmt: skip
    config = TrainConfig(
        dataset=dataset,
        model=_model_config(
            dataset, model, latent_dim, hidden, channels, likelihood, data_root, image_size, image_channels
        ),
        beta=beta,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        warmup_epochs=warmup_epochs,
        device=device,
        data_root=data_root,
        image_size=image_size,
        image_channels=image_channels,
        defence=_defence("mixup" if mixup else defence, options),
        save_epochs=_int_list(save_epochs, "--save-epochs"),
    )
    result = run_training(config, out, progress=not quiet)
    _print_info(result.run_dir)


def _defence(name: str, options: dict[str, tuple]) -> Defence:
    """The defence ``name`` built from its command-line options (a table, one line per defence)."""
    from vaelens.training import AdversarialConfig, MixupConfig, NoDefence, NoiseConfig, check_defence

    def mixup(alpha: float, per_sample: bool, weights: str, target: str) -> MixupConfig:
        w = _float_list(weights, "--mixup-weights")
        if len(w) != 3:
            raise VaelensError(f"--mixup-weights takes three numbers (kl, recon, latent); got {weights!r}")
        return MixupConfig(alpha, per_sample, w[0], w[1], w[2], cast(Any, target))

    factories: dict[str, Callable[..., Defence]] = {
        "none": NoDefence,
        "mixup": mixup,
        "adversarial": AdversarialConfig,
        "noise": NoiseConfig,
    }
    return factories[check_defence(name)](*options.get(name, ()))


def _print_info(run: Path) -> None:
    from vaelens.experiments import run_info

    info = run_info(run)
    table = Table(title=f"vaelens run {info['run']}", show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    config = dict(info["config"])
    defence = dict(config.pop("defence"))
    for key, value in {**config.pop("model"), **config}.items():
        table.add_row(key, str(value))
    name = defence.pop("name")
    table.add_row("defence", name)
    for key, value in defence.items():
        table.add_row(f"{name} {key}", str(value))
    table.add_row("epochs done", str(info["epochs_done"]))
    for key, value in info["final"].items():
        table.add_row(f"final {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@command
def info(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print a run's config and final metrics."""
    from vaelens.experiments import run_info

    if as_json:
        typer.echo(json.dumps(run_info(run), indent=2))
    else:
        _print_info(run)


OVERWRITE = typer.Option("--overwrite", help="Replace what another command or config wrote into --out.")
MODEL_HELP = (
    "Any VAE instead of a run: diffusers:DIR (save_pretrained folder, or a pipeline with vae/), "
    "diffusers:ORG/NAME[@REVISION][#SUBFOLDER] (a hub id; offline, the HF cache), pythae:DIR "
    "(model.save folder) or python:MODULE:FUNCTION (imports and runs that code of yours)."
)
LATENT_SPACE = typer.Option(
    "--latent-space",
    help="diffusers models: diffusion (the latent the diffusion model sees, by the config's scaling_factor, "
    "shift_factor or latents_mean/std) or raw (the encoder's own).",
)
CHECKPOINTING = typer.Option(
    "--checkpointing", help="Gradient checkpointing where the model's class supports it: less memory, more time."
)
ALLOW_PICKLE = typer.Option(
    "--allow-pickle",
    help="Allow pickled model files (pythae custom networks, diffusers .bin weights). Unpickling runs any code "
    "the file holds: only for files you trust.",
)
RUN_ARGUMENT = typer.Argument(help="A run directory, or RUN@N: the weights kept after epoch N.")
IMAGE_SIZE = typer.Option(help="Side of folder: images, video frames and volumes (default: the model's).")
FRAMES = typer.Option(
    help="Frames per clip, for a folder: of video files (default 8, or the nearest the model takes: 9 for 1 + 4k)."
)
SAMPLE_RATE = typer.Option(help="Hz, for a folder: of audio files (default: the first file's rate).")
SECONDS = typer.Option(help="Seconds per clip from the start, for a folder: of audio files (default 1).")


def _media(frames: int | None, sample_rate: int | None, seconds: float | None) -> Any:
    """How clips are cut from folder: video and audio files (imported here: --help loads no torch)."""
    from vaelens.data import MediaOptions

    return MediaOptions(frames, sample_rate, seconds)


CHANNELS = typer.Option(help="1 or 3, for folder: images (default: the model's).")


class Source(NamedTuple):
    """Where a command's model comes from: the spec, and the directory default outputs go below."""

    spec: str
    meta: dict[str, str]

    def out(self, name: str) -> Path:
        from vaelens.experiments import is_run_spec, output_dir

        return output_dir(self.spec, name) if is_run_spec(self.spec) else Path(f"vaelens-{name}")


def _source(run: str | None, model: str | None) -> Source:
    if (run is None) == (model is None):
        raise VaelensError("give a run directory (RUN or RUN@N) or --model SPEC, exactly one of them")
    if model is not None:
        return Source(model, {"model": model})
    assert run is not None
    return Source(run, {"run": run})


def _rms_budgets(eps_rms: str, norm: str, d: int) -> list[float]:
    """Absolute L2 budgets for RMS-per-element ones: ||delta||_2 = eps_rms * sqrt(d), so a budget
    means the same for a 28 x 28 digit, a 512 x 512 photo and a clip of 33 frames."""
    if norm != "l2":
        raise VaelensError("--eps-rms is an L2 budget; with --norm linf, --eps is already per element")
    return [r * d**0.5 for r in _float_list(eps_rms, "--eps-rms")]


def _latent_meta(model: Any) -> dict[str, Any]:
    """What summary.json records of a third-party model's latent space (nothing for vaelens' runs)."""
    if not hasattr(model, "latent_space"):
        return {}
    norm = getattr(model, "latent_norm", None)
    return {"latent_space": model.latent_space, "latent_normalisation": norm.source if norm is not None else None}


def _audit_run(source: Source, config: AuditConfig, dataset: str | None, split: str, n: int, out: Path, device: str,
               quiet: bool, overwrite: bool, image_size: int | None = None, channels: int | None = None,
               allow_pickle: bool = False, media: Any = None, latent_space: str = "diffusion",
               checkpointing: bool = False) -> None:  # fmt: skip
    """Audit a model on the first n inputs of a split; write files, print a table."""
    from vaelens.evaluation import SUMMARY_STATS, audit_output, write_audit
    from vaelens.evaluation import audit as run_audit
    from vaelens.experiments import check_not_model, load_model_inputs

    spec = source.spec
    check_not_model(out, spec)
    model, name, x, labels = load_model_inputs(spec, dataset, split, n, device, image_size, channels, allow_pickle,
                                               media, latent_space, checkpointing)  # fmt: skip
    meta = {**source.meta, "dataset": name, "split": split, **_latent_meta(model)}
    claim_output(out, "audit", audit_output(config, meta), overwrite)  # refuse before computing
    result = run_audit(model, x, labels, config, progress=not quiet)
    paths = write_audit(result, out, meta, overwrite)
    table = Table(title=f"local robustness of {spec} on {len(x)} {name} {split} inputs")
    table.add_column("kind", no_wrap=True)
    table.add_column("score", no_wrap=True)
    for col in SUMMARY_STATS:
        table.add_column(col, justify="right", no_wrap=True)
    for k, scores in result.summary().items():
        for score, stats in scores.items():
            table.add_row(k, score, *(f"{stats[c]:.4g}" for c in SUMMARY_STATS))
    console.print(table)
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


@command
def audit(
    run: Annotated[
        str | None, typer.Argument(help="A run directory, or RUN@N: the weights kept after epoch N.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set to audit (default: the run's own).")] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    n: Annotated[int, typer.Option(help="Inputs to audit (the first n of the split).")] = 1000,
    kind: Annotated[
        str,
        typer.Option(help="Metric kind(s), comma-separated: mean, stochastic, fisher, output, output-stochastic."),
    ] = "stochastic",
    batch_size: Annotated[int, typer.Option()] = 128,
    chunk_size: Annotated[int | None, typer.Option(help="Samples per Jacobian (bounds memory).")] = None,
    normalize: Annotated[str, typer.Option(help="Entropy normalisation: trace, or max (released code).")] = "trace",
    probe_n: Annotated[int, typer.Option(help="Inputs for the eigen-direction probe (0: none).")] = 100,
    probe_scale: Annotated[str, typer.Option(help="Probe step scale: lambda (released) or unit.")] = "lambda",
    out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN/audit).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
    method: Annotated[
        str, typer.Option(help="auto (exact unless over --memory-gb), exact, or lanczos (top eigenvalues only).")
    ] = "auto",
    iters: Annotated[int, typer.Option(help="Lanczos iterations (eigenvalues kept per input).")] = 30,
    memory_gb: Annotated[
        float, typer.Option(help="Memory the exact spectrum may use (auto then picks Lanczos).")
    ] = 2.0,
    image_size: Annotated[int | None, IMAGE_SIZE] = None,
    channels: Annotated[int | None, CHANNELS] = None,
    frames: Annotated[int | None, FRAMES] = None,
    sample_rate: Annotated[int | None, SAMPLE_RATE] = None,
    seconds: Annotated[float | None, SECONDS] = None,
    allow_pickle: Annotated[bool, ALLOW_PICKLE] = False,
    latent_space: Annotated[str, LATENT_SPACE] = "diffusion",
    checkpointing: Annotated[bool, CHECKPOINTING] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
) -> None:
    """Score local robustness (spectral radius, entropy, ...) of a trained VAE on n inputs."""
    from vaelens.evaluation import AuditConfig

    # the names are checked by the config, which is where every caller's strings are validated
    config = AuditConfig(
        kinds=tuple(cast(Any, k.strip()) for k in kind.split(",") if k.strip()),
        batch_size=batch_size,
        chunk_size=chunk_size,
        normalize=cast(Any, normalize),
        probe_n=probe_n,
        probe_scale=cast(Any, probe_scale),
        seed=seed,
        method=cast(Any, method),
        iters=iters,
        memory_budget_gb=memory_gb,
    )
    source = _source(run, model)
    _audit_run(source, config, dataset, split, n, out or source.out("audit"), device, quiet, overwrite, image_size,
               channels, allow_pickle, _media(frames, sample_rate, seconds), latent_space, checkpointing)  # fmt: skip


@command
def attack(
    run: Annotated[
        str | None, typer.Argument(help="A run directory, or RUN@N: the weights kept after epoch N.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
    method: Annotated[str, typer.Option(help="eigen, pgd, apgd (Auto-PGD, no step size to tune) or random.")] = "pgd",
    objective: Annotated[
        str | None,
        typer.Option(help="kl, kl_reverse, skl, latent, recon or stochastic (default: kl; skl when --targeted)."),
    ] = None,
    norm: Annotated[str, typer.Option(help="l2 or linf.")] = "l2",
    eps: Annotated[str, typer.Option(help="Budget, or a comma-separated list for a curve.")] = "1.0",
    eps_rms: Annotated[
        str | None,
        typer.Option(help="L2 budget(s) as RMS per input element, for any input size: eps = eps_rms * sqrt(d)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="PGD steps.")] = 50,
    restarts: Annotated[int, typer.Option(help="PGD restarts (best kept).")] = 1,
    kind: Annotated[str, typer.Option(help="Metric kind for --method eigen.")] = "fisher",
    directions: Annotated[int, typer.Option(help="Eigen-directions tried by --method eigen.")] = 1,
    targeted: Annotated[
        bool,
        typer.Option(
            "--targeted",
            help="Pull each input towards another input of the split (projected descent on --objective).",
        ),
    ] = False,
    n: Annotated[int, typer.Option(help="Inputs to attack (the first n of the split).")] = 500,
    dataset: Annotated[str | None, typer.Option(help="Data set (default: the run's own).")] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    batch_size: Annotated[int, typer.Option()] = 250,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN/attack-METHOD).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
    image_size: Annotated[int | None, IMAGE_SIZE] = None,
    channels: Annotated[int | None, CHANNELS] = None,
    frames: Annotated[int | None, FRAMES] = None,
    sample_rate: Annotated[int | None, SAMPLE_RATE] = None,
    seconds: Annotated[float | None, SECONDS] = None,
    allow_pickle: Annotated[bool, ALLOW_PICKLE] = False,
    latent_space: Annotated[str, LATENT_SPACE] = "diffusion",
    checkpointing: Annotated[bool, CHECKPOINTING] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
) -> None:
    """Attack a trained VAE's encoding and measure the damage (KL, reconstruction, MS-SSIM, ...)."""
    from vaelens.attacks import Damage
    from vaelens.evaluation import AttackSpec, attack_output, attack_sweep, choose_targets, write_attack_report
    from vaelens.experiments import check_not_model, load_model_inputs

    spec = AttackSpec(cast(Any, method), cast(Any, norm), cast(Any, objective), steps, restarts, cast(Any, kind),
                      directions, targeted, seed)  # fmt: skip
    budgets = _float_list(eps, "--eps")
    source = _source(run, model)
    vae, name, x, labels = load_model_inputs(source.spec, dataset, split, n, device, image_size, channels, allow_pickle,
                                             _media(frames, sample_rate, seconds), latent_space,
                                             checkpointing)  # fmt: skip
    meta = {**source.meta, "dataset": name, "split": split, **_latent_meta(vae)}
    if eps_rms is not None:
        budgets, meta["eps_rms"] = _rms_budgets(eps_rms, norm, x[0].numel()), eps_rms
    x_target = choose_targets(x, seed) if targeted else None  # refused (n < 2) before anything is claimed
    check_not_model(out := out or source.out(spec.dirname), source.spec)
    out = claim_output(out, "attack", attack_output(spec, budgets, meta), overwrite)
    result = attack_sweep(vae, x, budgets, spec, x_target, batch_size, progress=not quiet)
    paths = write_attack_report(result, vae, out, labels, meta, overwrite)
    what = kind if method == "eigen" else spec.objective
    table = Table(title=f"{method} attack ({norm}, {what}{', targeted' if targeted else ''}) on {len(x)} inputs")
    table.add_column("eps", justify="right", no_wrap=True)
    for c in Damage.SHOWN:
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    means = {c: result.mean(c) for c in Damage.SHOWN}
    for i, (e, sec) in enumerate(zip(result.eps, result.seconds, strict=True)):
        table.add_row(f"{e:g}", *(f"{means[c][i]:.4g}" for c in Damage.SHOWN), f"{sec:.2f}")
    console.print(table)
    if result.target_skl_before is not None and result.target_skl_after is not None:
        before = result.target_skl_before.mean().item()
        for e, after in zip(result.eps, result.target_skl_after, strict=True):
            console.print(f"eps {e:g}: mean SKL to the targets' posteriors {before:.4g} -> {after.mean().item():.4g}")
    for e, stuck in zip(result.eps, result.no_progress(), strict=True):
        if stuck:
            note = f"eps {e:g}: the attack left {stuck} of {len(x)} inputs unchanged (no_progress in damage.csv)"
            err_console.print(Text("warning: ", style="yellow") + Text(note))
    for metric, value in result.auddc().items():
        if metric in ("kl", "recon_shift"):
            console.print(f"AUDDC ({metric}): {value:.4g}")
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


def _print_certification(results: list[Any], title: str, attack: bool) -> None:
    from vaelens.evaluation import summarize

    table = Table(title=title)
    for header in ("output", "eps", "abstain", "median bound", "per pixel", "attacked", "sqrt(l1) eps", "gap"):
        table.add_column(header, justify="right", no_wrap=True)
    for result in results:
        s = summarize(result)
        for r in s["per_eps"]:
            rms = f"{r['median_bound_rms']:.4g}" if s["output"] == "recon" else ""
            table.add_row(s["output"], f"{r['eps']:g}", f"{100 * r['abstain_rate']:.0f}%", f"{r['median_bound']:.4g}",
                          rms, f"{r['median_attacked']:.4g}", f"{r['median_predicted']:.4g}",
                          f"{r['median_gap']:.3g}x" if r["median_gap"] == r["median_gap"] else "-")  # fmt: skip
            if r["exceeded"]:
                err_console.print(Text("warning: ", style="yellow") + Text(
                    f"{s['output']} eps {r['eps']:g}: an attack exceeded the certificate on {r['exceeded']} inputs "
                    "(possible with probability alpha per input; report it if it recurs)"))  # fmt: skip
    console.print(table)
    for result in results:
        console.print(f"reconstruction MSE with the center chosen in {result.certificate.output}: "
                      f"{result.recon_mse.mean():.4g} smoothed, {result.base_recon_mse.mean():.4g} base")  # fmt: skip
    if attack:
        for result in results:
            console.print(f"{result.certificate.output}: {summarize(result)['explanation']}", highlight=False)


@command
def certify(
    run: Annotated[str | None, RUN_ARGUMENT] = None,
    model: Annotated[str | None, typer.Option("--model", help=MODEL_HELP)] = None,
    sigma: Annotated[float, typer.Option(help="Gaussian input noise of the smoothing (> 0).")] = 0.25,
    eps: Annotated[str, typer.Option(help="L2 budgets to certify, comma-separated.")] = "0.1,0.25,0.5",
    n: Annotated[int, typer.Option(help="Noise samples per input for medians, mass check and bound.")] = 2000,
    n0: Annotated[int, typer.Option(help="Candidate centers per input (< n).")] = 100,
    alpha: Annotated[float, typer.Option(help="Failure probability of each certificate, in (0, 1).")] = 0.001,
    output: Annotated[str, typer.Option(help="What to certify, comma-separated: latent, recon.")] = "latent",
    attack: Annotated[
        bool, typer.Option("--attack", help="Also attack the smoothed model: the bracket (lower bound beside upper).")
    ] = False,
    steps: Annotated[int, typer.Option(help="PGD steps of the --attack ensemble (APGD takes twice as many).")] = 20,
    inputs: Annotated[int, typer.Option(help="Inputs to certify (the first of the split).")] = 100,
    attack_inputs: Annotated[
        int | None, typer.Option(help="Attack only the first this many inputs (default: all).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set (default: the run's own).")] = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    batch_size: Annotated[int, typer.Option(help="Inputs smoothed at once.")] = 32,
    chunk_size: Annotated[int, typer.Option(help="Noisy copies per forward pass (bounds memory).")] = 4096,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN/certify).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seeds the smoothing noise (and the attacks).")] = 0,
    image_size: Annotated[int | None, IMAGE_SIZE] = None,
    channels: Annotated[int | None, CHANNELS] = None,
    allow_pickle: Annotated[bool, ALLOW_PICKLE] = False,
    latent_space: Annotated[str, LATENT_SPACE] = "diffusion",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
) -> None:
    """Certify the center-smoothed model: a bound on how far any L2 perturbation of size eps can move its
    latent center or reconstruction (docs/method.md s. 10); with --attack, the attacks' damage beside it."""
    from vaelens.certification import SmoothConfig, SmoothedVAE, check_eps
    from vaelens.evaluation import bracket, check_bracket_options, write_certification
    from vaelens.experiments import check_not_model, load_model_inputs

    budgets = list(check_eps(_float_list(eps, "--eps")))
    check_bracket_options(steps, batch_size, attack_inputs)
    if inputs < 1:  # certify's --n is the sample count: the loader's message would name the wrong flag
        raise VaelensError(f"--inputs must be >= 1; got {inputs}")
    outputs = [o.strip() for o in output.split(",")]  # each is checked by SmoothConfig, the one check
    configs = [SmoothConfig(sigma, n, n0, alpha, None, cast(Any, o), seed, chunk_size) for o in outputs]  # checks
    source = _source(run, model)
    if source.spec.startswith("smooth:"):
        raise VaelensError("certify smooths the model itself: give the base model's spec and --sigma, not smooth:")
    base, name, x, labels = load_model_inputs(source.spec, dataset, split, inputs, device, image_size, channels,
                                              allow_pickle, latent_space=latent_space)  # fmt: skip
    meta = {**source.meta, "dataset": name, "split": split, **_latent_meta(base), "inputs": len(x), "sigma": sigma,
            "eps": budgets, "n": n, "n0": n0, "alpha": alpha, "outputs": outputs, "attack": attack, "steps": steps,
            "attack_inputs": attack_inputs, "seed": seed}  # fmt: skip
    check_not_model(out := out or source.out("certify"), source.spec)
    with released_if_refused(out):  # a refusal while certifying leaves no claim behind
        out = claim_output(out, "certify", meta, overwrite)  # refuse before computing
        results = [
            bracket(SmoothedVAE(base, c), x, budgets, attack, steps, batch_size, seed, not quiet, attack_inputs)
            for c in configs
        ]
        paths = write_certification(results, out, meta, labels, overwrite)
    _print_certification(results, f"certified smoothing (sigma {sigma:g}, n {n}, alpha {alpha:g}) of {source.spec} "
                         f"on {len(x)} inputs", attack)  # fmt: skip
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


@command
def compare(
    runs: Annotated[list[str] | None, typer.Argument(help="Run directories (RUN or RUN@N).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help=f"{MODEL_HELP} Repeat for several.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("vaelens-compare"),
    n: Annotated[int, typer.Option(help="Test inputs (the first n of the first run's test split).")] = 500,
    eps: Annotated[float, typer.Option(help="L2 budget of EigenAttack and PGD.")] = 1.0,
    steps: Annotated[int, typer.Option(help="PGD steps.")] = 50,
    batch_size: Annotated[int, typer.Option()] = 250,
    seed: Annotated[int, typer.Option()] = 0,
    dataset: Annotated[str | None, typer.Option(help="Data set (default: the first run's own).")] = None,
    image_size: Annotated[int | None, IMAGE_SIZE] = None,
    channels: Annotated[int | None, CHANNELS] = None,
    frames: Annotated[int | None, FRAMES] = None,
    sample_rate: Annotated[int | None, SAMPLE_RATE] = None,
    seconds: Annotated[float | None, SECONDS] = None,
    allow_pickle: Annotated[bool, ALLOW_PICKLE] = False,
    latent_space: Annotated[str, LATENT_SPACE] = "diffusion",
    checkpointing: Annotated[bool, CHECKPOINTING] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
) -> None:
    """Compare runs on robustness (rho(G), attack damage) against reconstruction; mixup vs the beta curve."""
    from vaelens.experiments import (
        COMPARE_COLUMNS,
        DatasetMismatchWarning,
        check_not_model,
        compare_output,
        compare_runs,
        write_comparison,
    )

    runs = [*(runs or []), *(model or [])]
    if not runs:
        raise VaelensError("give the run directories to compare, or models with --model SPEC")
    for spec in runs:
        check_not_model(out, spec)
    with released_if_refused(out):  # a run or model refused while loading leaves no claim behind
        claim_output(out, "compare", compare_output(runs, n, eps, steps, seed, latent_space), overwrite)  # refuse first
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DatasetMismatchWarning)
            comp = compare_runs(runs, n, eps, steps, batch_size, seed, not quiet, dataset, image_size, channels,
                                allow_pickle, _media(frames, sample_rate, seconds), latent_space,
                                checkpointing)  # fmt: skip
    for w in caught:
        err_console.print(Text("warning: ", style="yellow") + Text(str(w.message)), soft_wrap=True)
    paths = write_comparison(comp, out, overwrite)
    table = Table(title=f"{len(runs)} runs on {comp.n} test inputs, attacks at L2 eps {comp.eps:g}")
    for header, _ in COMPARE_COLUMNS:
        table.add_column(header, justify="left" if header == "run" else "right", no_wrap=True)
    for r in comp.rows:
        table.add_row(*r.cells())
    console.print(table)
    for sentence in comp.verdict:
        console.print(sentence, highlight=False)
    console.print(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


@command
def sweep(
    config: Annotated[Path | None, typer.Option(help="TOML file with the sweep's settings.")] = None,
    preset: Annotated[
        str | None, typer.Option(help="paper: the released protocol (docs/method.md s. 7); demo: the offline demo.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set(s), comma-separated.")] = None,
    model: Annotated[str | None, typer.Option(help="mlp, conv, or both: mlp,conv.")] = None,
    betas: Annotated[str | None, typer.Option(help="logspace:-2:1:50 or a list such as 0.5,2.")] = None,
    mixup: Annotated[str | None, typer.Option(help="off, on or both.")] = None,
    defences: Annotated[
        str | None,
        typer.Option(help="Defences, comma-separated: none, mixup, adversarial, noise (instead of --mixup)."),
    ] = None,
    mixup_betas: Annotated[str | None, typer.Option(help="Betas of the defended runs (default: all).")] = None,
    eval_epochs: Annotated[
        str | None, typer.Option(help="Also evaluate each run at these earlier epochs, e.g. 5,10,20,50.")
    ] = None,
    cosine_t_max: Annotated[int | None, typer.Option(help="Cosine period in epochs (released: 200).")] = None,
    mixup_target: Annotated[str | None, typer.Option(help="Mixup latent target: mean or sample.")] = None,
    adv_eps: Annotated[float | None, typer.Option(help="L2 budget of adversarial training's PGD.")] = None,
    adv_steps: Annotated[int | None, typer.Option(help="PGD steps of adversarial training.")] = None,
    noise_sigma: Annotated[float | None, typer.Option(help="Input noise of noise-augmentation training.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", "--seed", help="Seed(s), comma-separated.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    latent_dim: Annotated[int | None, typer.Option()] = None,
    n: Annotated[int | None, typer.Option(help="Test inputs audited and attacked per run.")] = None,
    eps: Annotated[str | None, typer.Option(help="L2 attack budgets, comma-separated.")] = None,
    steps: Annotated[int | None, typer.Option(help="PGD steps.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or mps.")] = None,
    jobs: Annotated[int, typer.Option(help="Runs at once (process pool of the local executor).")] = 1,
    executor: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray instance or cluster).")] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="auto: the cluster of `ray start --head`; default: a private local Ray instance."),
    ] = None,
    unit_cpus: Annotated[float, typer.Option(help="CPUs per unit on Ray (torch threads).")] = 1.0,
    unit_gpus: Annotated[float, typer.Option(help="GPUs per unit on Ray; 0.25 lets four units share one.")] = 0.0,
    retries: Annotated[int, typer.Option(help="Retries of a unit whose Ray worker died (it resumes).")] = 2,
    out: Annotated[Path, typer.Option(help="Sweep directory; running again resumes.")] = Path("vaelens-sweep"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train, audit and attack a grid of runs (data sets x models x betas x defences x seeds), resumably."""
    from vaelens.experiments import RayOptions, SweepConfig, run_sweep

    flags = {
        "datasets": dataset and [d.strip() for d in dataset.split(",") if d.strip()],
        "models": model and [m.strip() for m in model.split(",") if m.strip()],
        "betas": betas,
        "mixup": mixup,
        "defences": defences and [d.strip() for d in defences.split(",") if d.strip()],
        "mixup_betas": mixup_betas and _float_list(mixup_betas, "--mixup-betas"),
        "eval_epochs": eval_epochs and list(_int_list(eval_epochs, "--eval-epochs")),
        "cosine_t_max": cosine_t_max,
        "mixup_target": mixup_target,
        "adv_eps": adv_eps,
        "adv_steps": adv_steps,
        "noise_sigma": noise_sigma,
        "seeds": seeds and list(_int_list(seeds, "--seeds")),
        "epochs": epochs,
        "latent_dim": latent_dim,
        "n": n,
        "eps": eps and _float_list(eps, "--eps"),
        "pgd_steps": steps,
        "device": device,
    }
    sweep_config = SweepConfig.resolve(preset, config, flags)
    if executor != "ray" and ray_address is not None:  # never ignored silently
        raise VaelensError(f"--ray-address is for --executor ray; add --executor ray or drop it (got {executor!r})")
    ray = RayOptions(ray_address, unit_cpus, unit_gpus, retries)
    result = run_sweep(sweep_config, out, jobs=jobs, progress=not quiet, executor=executor, ray=ray)
    table = Table(title=f"sweep in {out} ({executor} executor)")
    for header in ("done", "skipped (already finished)", "retried", "failed"):
        table.add_column(header, justify="right")
    counts = result.outcome.counts()
    table.add_row(*(str(counts[k]) for k in ("done", "skipped", "retried", "failed")))
    console.print(table)
    console.print(f"{len(result.rows)} runs finished; results in {out / 'results.csv'}")
    if result.outcome.failed:
        for name, message in result.outcome.failed.items():
            err_console.print(Text(f"failed: {name}: ", style="red") + Text(message), soft_wrap=True)
        raise VaelensError(
            f"{len(result.outcome.failed)} runs failed (above); fix the cause and run the same command again"
        )


@command
def report(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory written by `vaelens sweep`.")],
) -> None:
    """Write report.html (self-contained, figures embedded), the figures as PNG and trend.csv for a sweep."""
    from vaelens.experiments import write_report

    path = write_report(sweep_dir)
    console.print(f"report written to {path}")


def _check_protect_out(out: Path, images: Path, specs: list[str]) -> None:
    """Refuse an --out that would write over the originals or into a model's folder."""
    from vaelens.evaluation import check_not_images
    from vaelens.experiments import check_not_model

    check_not_images(out, images)  # the originals are never written, with or without --overwrite
    check_out_path(out)
    for spec in specs:
        check_not_model(out, spec)


def _check_protector_options(amortised: bool, refine_steps: int, target: Path | None) -> None:
    """Refuse, in one line, protect options that would be silently ignored."""
    if refine_steps and not amortised:
        raise VaelensError("--refine-steps continues from a --protector's output; pass --protector, or use --steps")
    if amortised and target is not None:
        raise VaelensError("a --protector pulls towards the flat gray it was trained for; drop --target")


def _protect_video_folder(specs: list[str], folder: Path, out: Path, config: Any, device: str, allow_pickle: bool,
                          latent_space: str, checkpointing: bool, quiet: bool, overwrite: bool,
                          image_only: list[str]) -> None:  # fmt: skip
    """protect on a folder of video files (evaluation/_protect_video.py): NAME.mkv, protect.csv, summary.json."""
    if image_only or len(specs) > 1:
        raise VaelensError(
            f"videos are protected against one --model, pulled towards a flat gray clip; "
            f"{', '.join(image_only) or 'several --model'} {'are' if len(image_only) > 1 else 'is'} for images"
        )
    model = specs[0]
    from vaelens.evaluation import IMAGE_SUFFIXES, protect_video_files, video_files
    from vaelens.experiments import load_model

    videos = video_files(folder)
    pictures = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if pictures:
        raise VaelensError(
            f"{folder} holds {len(videos)} videos and {len(pictures)} images; protect takes one kind per "
            "folder: put the images and the videos in separate folders"
        )
    vae = load_model(model, device, allow_pickle, latent_space, checkpointing)
    meta = {"model": model, "images": str(folder), **_latent_meta(vae)}
    with released_if_refused(out):  # clip by clip: every clip checked, --out claimed, then each protected
        results, paths = protect_video_files(vae, videos, out, config, meta, overwrite, progress=not quiet)
    table = Table(title=f"protection of {len(results)} videos (eps {config.eps:g}/255)")
    for column in ("video", "frames protected", "distance before", "after", "perturbation PSNR", "after H.264"):
        table.add_column(column, justify="left" if column == "video" else "right", no_wrap=True)
    for name, p in results.items():
        held = "-" if p.codec_distance != p.codec_distance else "held" if p.codec_held else "[red]failed[/red]"
        table.add_row(name, f"{p.frames_protected}/{len(p.frames)}", f"{p.distance_before:.4g}",
                      f"{p.distance_after:.4g}", f"{p.perturbation_psnr:.1f}", held)  # fmt: skip
    console.print(table)
    console.print(f"wrote {len(paths)} files to {out}")


@command
def protect(
    images: Annotated[Path, typer.Option(help="Directory of the images (PNG, JPEG, ...) or videos to protect.")],
    out: Annotated[Path, typer.Option(help="Where the protected PNGs, protect.csv and summary.json go.")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help=f"A VAE to protect against; repeat for several at once. {MODEL_HELP}"),
    ] = None,
    evaluate_on: Annotated[
        list[str] | None, typer.Option("--evaluate-on", help="A VAE to measure the protection on only; repeatable.")
    ] = None,
    protector: Annotated[
        Path | None, typer.Option(help="A protector from `vaelens protect-train`: one forward pass per batch.")
    ] = None,
    refine_steps: Annotated[int, typer.Option(help="Auto-PGD steps after the --protector's output.")] = 0,
    target: Annotated[Path | None, typer.Option(help="Target image, resized to each (default: flat gray).")] = None,
    mask: Annotated[
        Path | None,
        typer.Option(help="Mask of the images' size: white pixels may change by eps, gray by a share, black stay."),
    ] = None,
    eps: Annotated[
        float | None, typer.Option(help="L-inf budget in 8-bit units (8 means 8/255; default 8, or the protector's).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Auto-PGD steps per image.")] = 200,
    robust: Annotated[
        str, typer.Option(help="Transforms to withstand, comma-separated: jpeg,resize,blur,noise (EOT).")
    ] = "",
    eot_samples: Annotated[int, typer.Option(help="Random transforms averaged per step with --robust.")] = 4,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Check each after 5 transforms.")] = True,
    batch_size: Annotated[int, typer.Option(help="Images of one size protected together.")] = 1,
    precision: Annotated[str, typer.Option(help="Encoders' forward passes: fp32, bf16 or fp16 (autocast).")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
    allow_pickle: Annotated[bool, ALLOW_PICKLE] = False,
    latent_space: Annotated[str, LATENT_SPACE] = "diffusion",
    checkpointing: Annotated[bool, CHECKPOINTING] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    overwrite: Annotated[bool, OVERWRITE] = False,
) -> None:
    """Protect images against editing through one or several VAEs (PhotoGuard's encoder attack).

    Writes copies, at their own size, whose codes are pulled towards a target's, and checks what survives,
    on the attacked encoders and on any --evaluate-on.
    """
    from vaelens.evaluation import (
        ProtectConfig,
        claim_protection,
        fit_encoders,
        read_image,
        read_image_files,
        video_files,
        write_protection,
    )
    from vaelens.evaluation import protect as run_protect
    from vaelens.experiments import load_encoders, load_protector

    amortised = load_protector(protector, device) if protector is not None else None
    specs = list(model or (amortised.specs if amortised else []))
    if not specs:
        raise VaelensError("no --model given; pass --model SPEC (repeatable), or a --protector that names its models")
    kinds = tuple(cast(Any, k.strip()) for k in robust.split(",") if k.strip())  # names checked by the config
    budget = eps if eps is not None else (amortised.eps if amortised else 8.0)
    config = ProtectConfig(eps=budget, steps=steps, robust=kinds, eot_samples=eot_samples, evaluate=evaluate,
                           seed=seed, batch_size=batch_size, precision=cast(Any, precision))  # fmt: skip
    _check_protector_options(amortised is not None, refine_steps, target)
    perturb = amortised.perturb(config, refine_steps) if amortised else None
    _check_protect_out(out, images, [*specs, *(evaluate_on or [])])
    if video_files(images):  # a folder of clips: protected by their own module
        image_only = {"--target": target, "--mask": mask, "--evaluate-on": evaluate_on, "--protector": amortised,
                      "--batch-size": batch_size != 1, "--precision": precision != "fp32"}  # fmt: skip
        return _protect_video_folder(specs, images, out, config, device, allow_pickle, latent_space, checkpointing,
                                     quiet, overwrite, [k for k, v in image_only.items() if v])  # fmt: skip
    files = read_image_files(images)
    goal = read_image(target, written=False) if target is not None else None
    # the mask: (H, W), each pixel's share of eps
    keep = read_image(mask, 1, written=False)[0].float() / 255 if mask is not None else None
    attacked = load_encoders(specs, device, allow_pickle, latent_space, checkpointing)
    evaluated = load_encoders(evaluate_on or [], device, allow_pickle, latent_space, checkpointing, list(attacked))
    pictures = {name: f.pixels for name, f in files.items()}
    fit_encoders({**attacked, **evaluated}, pictures, keep)  # every image against every model, before claiming
    meta = {"model": specs[0] if len(specs) == 1 else specs, "evaluate_on": evaluate_on or [], "images": str(images),
            "target": target and str(target), "mask": mask and str(mask),
            "protector": protector and str(protector), "refine_steps": refine_steps,
            **_latent_meta(next(iter(attacked.values())))}  # fmt: skip
    with released_if_refused(out):
        claim_protection(out, list(pictures), config, meta, overwrite)  # refuse before computing
        results = run_protect(attacked, pictures, config, goal, keep, not quiet, evaluated, perturb)
        paths = write_protection(results, out, config, meta, overwrite, sources=files)
    _print_protection(results, config.eps)
    console.print(f"wrote {len(paths)} files to {out}")


def _print_protection(results: dict[str, Any], eps: float) -> None:
    """The per-image table, the held counts and, with several encoders, the transfer table."""
    from vaelens.evaluation import held_counts, transfer_table

    table = Table(title=f"protection of {len(results)} images (eps {eps:g}/255)")
    for column in ("image", "size", "distance before", "after", "recon PSNR", "perturbation PSNR"):
        table.add_column(column, justify="left" if column == "image" else "right", no_wrap=True)
    transforms = list(next(iter(results.values())).checks)
    for t in transforms:
        table.add_column(t, justify="center", no_wrap=True)
    for name, p in results.items():
        held = ["held" if p.checks[t].held else "[red]failed[/red]" for t in transforms]
        size = f"{p.image.shape[-1]}x{p.image.shape[-2]}"
        table.add_row(name, size, f"{p.distance_before:.4g}", f"{p.distance_after:.4g}", f"{p.recon_psnr:.1f}",
                      f"{p.perturbation_psnr:.1f}", *held)  # fmt: skip
    console.print(table)
    if not transforms:
        return
    counts = held_counts(results)
    console.print("held after: " + ", ".join(f"{t} {counts[t]}/{len(results)}" for t in transforms))
    rows = transfer_table(results)
    columns = list(next(iter(rows.values())))
    if len(columns) > 1:
        transfer = Table(title="transfer: share of (image, transform) pairs held, attacked on rows")
        for column in ("attacked", *columns):
            transfer.add_column(column, justify="left" if column == "attacked" else "right", no_wrap=True)
        for attacked, rates in rows.items():
            transfer.add_row(attacked, *(f"{rates[c]:.2f}" for c in columns))
        console.print(transfer)


@command
def protect_train(
    images: Annotated[Path, typer.Option(help="Directory of images to train on (random crops of them).")],
    out: Annotated[Path, typer.Option(help="The protector's directory (config.json, safetensors, losses.csv).")],
    model: Annotated[
        list[str], typer.Option("--model", help=f"A VAE to protect against; repeat for several. {MODEL_HELP}")
    ],
    eps: Annotated[float, typer.Option(help="L-inf budget in 8-bit units, built into the network.")] = 8.0,
    epochs: Annotated[int, typer.Option(help="Passes over the images (a longer run extends a finished one).")] = 20,
    batch_size: Annotated[int, typer.Option(help="Crops per optimiser step.")] = 16,
    crop: Annotated[int, typer.Option(help="Side of the square random crops trained on.")] = 64,
    crops_per_image: Annotated[int, typer.Option(help="Random crops of each image per epoch.")] = 8,
    lr: Annotated[float, typer.Option(help="Adam's learning rate.")] = 1e-3,
    width: Annotated[int, typer.Option(help="The network's feature maps at full resolution.")] = 16,
    robust: Annotated[str, typer.Option(help="Transforms to withstand (EOT), as for protect.")] = "",
    eot_samples: Annotated[int, typer.Option(help="Random transforms averaged per step with --robust.")] = 1,
    precision: Annotated[str, typer.Option(help="Encoders' forward passes: fp32, bf16 or fp16.")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
    allow_pickle: Annotated[bool, ALLOW_PICKLE] = False,
    latent_space: Annotated[str, LATENT_SPACE] = "diffusion",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a protector: a small network that protects an image in one forward pass (use it with protect --protector).

    Checkpointed every epoch: run the same command again after an interruption and it resumes.
    """
    from vaelens.evaluation import ProtectorTrainConfig
    from vaelens.experiments import train_protector

    kinds = tuple(cast(Any, k.strip()) for k in robust.split(",") if k.strip())  # names checked by the config
    config = ProtectorTrainConfig(eps=eps, epochs=epochs, batch_size=batch_size, crop=crop,
                                  crops_per_image=crops_per_image, lr=lr, width=width, robust=kinds,
                                  eot_samples=eot_samples, precision=cast(Any, precision), seed=seed)  # fmt: skip
    run = train_protector(model, images, out, config, not quiet, device, allow_pickle=allow_pickle,
                          latent_space=latent_space)  # fmt: skip
    if run.resumed_from >= epochs:
        console.print(f"already trained for {run.resumed_from} epochs; nothing to do (a larger --epochs extends it)")
    elif run.resumed_from:
        console.print(f"resumed after epoch {run.resumed_from}")
    losses = ", ".join(f"{v:.3f}" for v in run.losses)
    console.print(f"protector in {run.out}; loss per epoch (1: no pull, 0: at the target): {losses}")


@command
def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("vaelens-demo"),
    epochs: Annotated[int, typer.Option(help="Epochs per run.")] = 10,
    n: Annotated[int, typer.Option(help="Test images audited and attacked per run.")] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """The main job, offline: train, audit and attack small VAEs on mnist-5k, and write the report.

    MLP VAEs at beta 0.1, 1 and 4, and at beta 1 with mixup.
    """
    from vaelens.experiments import run_demo

    result = run_demo(out, epochs, n, progress=not quiet)
    console.print(f"demo finished in {result.seconds:.0f} s; report: {result.report.resolve()}")


# ---- vaelens bench: the robustness leaderboard (issue 23) ----
bench_app = typer.Typer(no_args_is_help=False, help="The VAE robustness leaderboard under a fixed protocol.")
app.add_typer(bench_app, name="bench")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    protocol: Annotated[str, typer.Option(help="The protocol: v1 (mnist-5k) or tiny (digits, for tests).")] = "v1",
    zoo: Annotated[Path | None, typer.Option(help="A zoo trained by `vaelens bench train-zoo`.")] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help=f"Submit a model as an entry (repeatable). {MODEL_HELP}")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory; running again resumes.")] = Path("vaelens-bench"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Measure the zoo and submitted models under the protocol; write leaderboard.csv, .json and index.html."""
    if ctx.invoked_subcommand is not None:
        given = {"--protocol": protocol != "v1", "--zoo": zoo, "--model": model, "--out": out != Path("vaelens-bench"),
                 "--quiet": quiet}  # fmt: skip
        if any(given.values()):
            _fail("bench", f"{', '.join(k for k, v in given.items() if v)} before {ctx.invoked_subcommand} would be "
                  f"ignored; give the options after it: vaelens bench {ctx.invoked_subcommand} --help", 2)  # fmt: skip
        return
    _boundary(_bench)(protocol, zoo, model or [], out, quiet)


def _bench(protocol: str, zoo: Path | None, models: list[str], out: Path, quiet: bool) -> None:
    from vaelens.experiments import run_bench

    run = run_bench(protocol, out, zoo=zoo, models=models, progress=not quiet)
    console.print(f"protocol {protocol}: {len(run.done)} measured, {len(run.skipped)} already measured")
    for s in run.board.standings:
        console.print(f"{s.rank:>3} {s.entry:<28} frontier ratio {s.frontier_ratio:.3g} "
                      f"[{s.ratio_min:.3g}, {s.ratio_max:.3g}]  {s.verdict}", soft_wrap=True)  # fmt: skip
    console.print(f"leaderboard in {out / 'leaderboard.csv'}, {out / 'leaderboard.json'}, {out / 'index.html'}")
    if run.failed:
        for name, message in run.failed.items():
            err_console.print(Text(f"failed: {name}: ", style="red") + Text(message), soft_wrap=True)
        raise VaelensError(
            f"{len(run.failed)} measurements (entry, seed) failed (above); fix the cause and run the same command again"
        )


@bench_app.command("train-zoo")
def bench_train_zoo(
    protocol: Annotated[str, typer.Option(help="The protocol: v1 (mnist-5k) or tiny (digits, for tests).")] = "v1",
    families: Annotated[str | None, typer.Option(help="Only these families, comma-separated (default: all).")] = None,
    executor: Annotated[str, typer.Option(help="local (in turn) or ray (one task per member).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="auto, an address, or default: a private instance.")] = None,
    unit_cpus: Annotated[float, typer.Option(help="CPUs per member on Ray (torch threads).")] = 1.0,
    out: Annotated[Path, typer.Option(help="Zoo directory; running again resumes.")] = Path("vaelens-zoo"),
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train every family of the protocol's zoo (vaelens' betas and defences, pythae's families), resumably."""
    _boundary(_train_zoo)(protocol, families, executor, ray_address, unit_cpus, out, quiet)


def _train_zoo(
    protocol: str, families: str | None, executor: str, ray_address: str | None, unit_cpus: float, out: Path,
    quiet: bool,
) -> None:  # fmt: skip
    from vaelens.experiments import RayOptions, train_zoo

    if executor != "ray" and ray_address is not None:
        raise VaelensError(f"--ray-address is for --executor ray; add --executor ray or drop it (got {executor!r})")
    names = [f.strip() for f in families.split(",") if f.strip()] if families else None
    result = train_zoo(protocol, out, names, executor, RayOptions(ray_address, unit_cpus), progress=not quiet)
    console.print(f"zoo in {out}: {len(result.done)} trained, {len(result.skipped)} already trained, "
                  f"{len(result.records)} members finished")  # fmt: skip
    if result.failed:
        for name, message in result.failed.items():
            err_console.print(Text(f"failed: {name}: ", style="red") + Text(message), soft_wrap=True)
        raise VaelensError(f"{len(result.failed)} members failed (above); fix the cause and run the same command again")


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {' '.join(str(message).split())}\n"


def main() -> None:
    """Entry point: run the CLI. Every command's failures become one line (see ``_boundary``)."""
    warnings.formatwarning = _one_line_warning  # notes from the library (Lanczos chosen, fp16 upcast)
    try:
        code = app(standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # a usage error: it prints itself
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
