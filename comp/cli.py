"""The ``comp`` command line: parses options and calls library functions (tests call those directly)."""

from __future__ import annotations

import sys

import click

from comp import __version__

CONFIG_HELP = "competition config (default ./comp.yaml)"


def config_option(f):
    return click.option("-c", "--config", "config_path", default="comp.yaml", show_default=True, help=CONFIG_HELP)(f)


class CompGroup(click.Group):
    """The one place errors are caught: a CompError (comp.errors: anything the user must fix) prints as one line,
    ``Error: ...``, and exits with its exit_code (1); anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        from comp.errors import CompError

        try:
            return super().invoke(ctx)
        except CompError as e:
            err = click.ClickException(str(e))
            err.exit_code = e.exit_code
            raise err from None


def load(config_path: str, exp: str | None = None, overrides=(), require_data: bool = True):
    from comp.config import load_config

    return load_config(config_path, exp=exp, overrides=overrides, require_data=require_data)


@click.group(cls=CompGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="comp")
def cli():
    """comp: from an image-classification competition folder to a scored submission.

    Start here: the whole pipeline within a time budget.

    \b
    comp init data/comp              # writes comp.yaml (every detected choice printed with its reason)
    comp auto --budget 20m           # -> submissions/auto.csv, reports/auto/index.html
    comp bundle auto --competition SLUG --dataset-id ME/SLUG --check   # Kaggle notebook, offline

    Or step by step:

    \b
    comp sample demo/comp            # a small real competition (Fashion-MNIST; --kind photo for JPEG photos)
    comp init demo/comp              # writes comp.yaml
    comp check                       # validates every row and image
    comp folds                       # folds/folds.csv
    comp train --exp base --all-folds
    comp predict --exp base --tta identity,hflip
    comp ensemble --exp base --name first
    comp score submissions/first.csv --solution demo/comp/solution.csv
    comp app --exp base              # Gradio app on http://127.0.0.1:7860
    comp export --exp base --format onnx --all-folds
    comp launch --exp base --exp big --all-folds   # many experiments on Ray
    comp tune --exp base --space configs/base.space.yaml --trials 40
    comp leaderboard
    """


# ---------------------------------------------------------------- foundation


@cli.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n-train", default=2000, show_default=True, help="training images")
@click.option("--n-test", default=500, show_default=True, help="test images")
@click.option("--imbalance", default=1.0, show_default=True, help="largest/smallest class ratio (long tail)")
@click.option("--seed", default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["png", "jpg"]),
              help="image files (default: png; --kind photo writes jpg only)")
@click.option("--kind", type=click.Choice(["fashion", "photo"]), default="fashion", show_default=True,
              help="fashion: the source's 28 px grey images; photo: colour JPEGs of 300-700 px, cluttered, some "
              "stored sideways with an EXIF Orientation tag")
@click.option(
    "--from", "from_dir", type=click.Path(exists=True, file_okay=False), help="folder with Fashion-MNIST IDX files"
)
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
@click.option("--multilabel", "target", flag_value="multilabel", help="2x2 mosaics of 1-3 items, several labels "
              "per image")
@click.option("--graded", "target", flag_value="graded", help="3x3 grids of 0-4 items, graded by the count "
              "(APTOS files; for data.task ordinal and qwk)")
@click.option("--layout", type=click.Choice(["hpa", "planet", "ranzcr"]), default="hpa", show_default=True,
              help="--multilabel files: hpa (Id,Target of indices), planet (image_name,tags of names), ranzcr "
              "(one 0/1 column per class)")
def sample(out, n_train, n_test, imbalance, seed, fmt, kind, from_dir, overwrite, target, layout):
    """Build a small real Kaggle-style competition in OUT (with the held-out OUT/solution.csv)."""
    from comp.data.sample_graded import build_sample

    try:
        info = build_sample(out, n_train, n_test, imbalance, seed, fmt, kind, from_dir, overwrite, target or "single",
                            layout)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    for line in info.lines():
        click.echo(line)


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--id-col", help="id column of train.csv")
@click.option("--label-col", help="label column of train.csv")
@click.option("--label-cols", help="one-hot / probability columns of train.csv, comma-separated (a,b,c)")
@click.option("--group-col", help="group column (folds keep a group together)")
@click.option("--train-dir", help="folder of training images, relative to DIRECTORY")
@click.option("--test-dir", help="folder of test images, relative to DIRECTORY")
@click.option("-c", "--config", "config_path", default="comp.yaml", show_default=True, help="config file to write")
@click.option("--overwrite", is_flag=True, help="replace an existing config file")
@click.option("--task", type=click.Choice(["multiclass", "multilabel", "ordinal"]),
              help="one class per image, several, or a graded label scored by qwk (default: one or several, detected "
              "from train.csv and the sample)")
def init(directory, id_col, label_col, label_cols, group_col, train_dir, test_dir, config_path, overwrite, task):
    """Write comp.yaml for the competition in DIRECTORY, saying what was detected.

    When the label is ambiguous (several candidate columns, or 0/1 columns the sample submission does not list)
    it stops and names the flags to pass instead of guessing."""
    from comp.data.init import init_competition

    cols = [c.strip() for c in label_cols.split(",") if c.strip()] if label_cols else None
    init_competition(
        directory, config_path, id_col=id_col, label_col=label_col, group_col=group_col,
        train_dir=train_dir, test_dir=test_dir, overwrite=overwrite, echo=click.echo, label_cols=cols, task=task,
    )


@cli.command()
@config_option
@click.option("--out", default="reports", show_default=True, help="folder for check.csv")
@click.option("--workers", type=int, help="decoding processes (default: all cores)")
def check(config_path, out, workers):
    """Validate every row and image; exit 1 if anything is wrong (details in reports/check.csv)."""
    from comp.data.check import run_check

    report = run_check(load(config_path), out_dir=out, workers=workers, echo=click.echo)
    sys.exit(0 if report.ok else 1)


@cli.command()
@config_option
@click.option("--n-splits", type=int, help="number of folds (default folds.n_splits)")
@click.option("--seed", type=int, help="split seed (default folds.seed)")
@click.option("--skip-bad", is_flag=True, help="leave out rows that `comp check` flags")
@click.option("--overwrite", is_flag=True, help="replace an existing folds file")
def folds(config_path, n_splits, seed, skip_bad, overwrite):
    """Stratified (grouped when data.group_col is set) K folds -> folds/folds.csv."""
    from comp.data.folds import make_folds

    make_folds(load(config_path), n_splits=n_splits, seed=seed, skip_bad=skip_bad, overwrite=overwrite, echo=click.echo)


@cli.command()
@click.argument("submission", type=click.Path(exists=True, dir_okay=False))
@click.option("--solution", required=True, type=click.Path(exists=True, dir_okay=False), help="truth csv (id, label)")
@click.option("--sample-submission", type=click.Path(exists=True, dir_okay=False), help="also require its header")
@click.option("--metric", type=click.Choice(["macro_f1", "accuracy", "log_loss", "qwk", "roc_auc", "micro_f1",
                                             "samples_f1", "f2", "map"]),
              help="headline metric (default: data.metric of the config when there is one, else macro_f1)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@config_option
def score(submission, solution, sample_submission, metric, as_json, config_path):
    """Score SUBMISSION against --solution: the competition's metric, macro F1, accuracy, per-class table.

    A label submission (id, label) or a wide one (id + one probability column per class: scored by its argmax
    for F1/accuracy/qwk and by its probabilities for log loss and ROC AUC)."""
    from pathlib import Path

    from comp.infer.multilabel_score import score_report

    cfg = load(config_path) if Path(config_path).exists() else None
    result, text = score_report(submission, solution, sample_submission, metric, cfg)
    if as_json:
        import json

        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        click.echo(text)


# ---------------------------------------------------------------- training


def train_options(f):
    f = click.option("--set", "overrides", multiple=True, help="override a config key: --set train.lr=0.01")(f)
    f = click.option("--exp", required=True, help="experiment name (reads configs/EXP.yaml when it exists)")(f)
    return config_option(f)


@cli.command()
@train_options
@click.option("--fold", "fold_ids", type=int, multiple=True, help="fold to train (repeatable)")
@click.option("--all-folds", is_flag=True, help="train every fold")
@click.option("--resume", is_flag=True, help="continue interrupted folds from their last finished epoch")
@click.option("--overwrite", is_flag=True, help="retrain the folds asked for (a run with another config: all)")
@click.option("--skip-bad", is_flag=True, help="leave out rows that `comp check` flags")
@click.option("--full", is_flag=True, help="train on every row with EXP's recipe, for the epochs its folds chose "
              "-> runs/EXP/full_sI/ (no OOF); needs EXP's folds finished")
@click.option("--seeds", type=int, default=1, show_default=True, help="--full: models to train (seed train.seed + I)")
def train(config_path, exp, overrides, fold_ids, all_folds, resume, overwrite, skip_bad, full, seeds):
    """Train one model per fold -> runs/EXP/fold_K/ and runs/EXP/oof.csv.

    \b
    comp train --exp base --fold 0 --set train.epochs=3
    comp train --exp base --all-folds --resume
    comp train --exp base --full --seeds 3      # after --all-folds: runs/base/full_s0..2
    torchrun --nproc_per_node 2 -m comp train --exp base --all-folds
    accelerate launch --multi_gpu --num_processes 2 -m comp train --exp base --all-folds
    (on CPU-only machines too: comp joins the processes over gloo)
    """
    from comp.orchestrate.locks import train_guard
    from comp.techniques import sources
    from comp.train.session import train_folds, train_full

    if full:
        if fold_ids or all_folds:
            raise click.UsageError("--full trains on every row (no folds): leave out --fold/--all-folds")
        cfg = load(config_path, exp, overrides)
        train_full(cfg, seeds=seeds, resume=resume, overwrite=overwrite, skip_bad=skip_bad, echo=click.echo,
                   sources=sources(cfg))
        return
    if seeds != 1:
        raise click.UsageError("--seeds goes with --full (fold models take train.seed)")
    if not fold_ids and not all_folds:
        raise click.UsageError("say which folds: --fold K (repeatable) or --all-folds")
    if fold_ids and all_folds:
        raise click.UsageError("pass --fold K or --all-folds, not both")
    cfg = load(config_path, exp, overrides)
    folds = None if all_folds else list(fold_ids)
    guard = train_guard(cfg.exp, folds)  # a fold held by a running `comp launch` is refused
    train_folds(cfg, folds=folds, resume=resume, overwrite=overwrite, skip_bad=skip_bad, echo=click.echo,
                sources=sources(cfg), on_epoch=guard)


@cli.command()
@click.option("--exp", required=True, help="experiment whose fold states to remove")
@click.option("--dry-run", is_flag=True, help="list what would be removed, with sizes, and remove nothing")
@click.option("--keep-cache", is_flag=True, help="keep runs/.cache (decoded images, shared by all experiments)")
@click.option("--unfinished", is_flag=True, help="also remove unfinished folds' states (they can't be resumed then)")
def clean(exp, dry_run, keep_cache, unfinished):
    """Remove finished folds' state/ folders and the caches under runs/.cache (--dry-run lists and sizes them)."""
    from comp.train.clean import clean as run_clean

    run_clean(exp, dry_run=dry_run, cache=not keep_cache, unfinished=unfinished, echo=click.echo)


@cli.command("lr-find")
@train_options
@click.option("--fold", "fold_id", type=int, default=0, show_default=True)
@click.option("--steps", default=100, show_default=True, help="learning rates tried (one batch each)")
@click.option("--start-lr", default=1e-7, show_default=True)
@click.option("--end-lr", default=10.0, show_default=True)
@click.option("--skip-bad", is_flag=True, help="leave out rows that `comp check` flags")
def lr_find(config_path, exp, overrides, fold_id, steps, start_lr, end_lr, skip_bad):
    """Learning-rate range test on one fold -> runs/EXP/lr_find.{png,csv} and a suggested train.lr."""
    from comp.techniques import sources
    from comp.train.lr_find import lr_find as run

    cfg = load(config_path, exp, overrides)
    run(cfg, fold=fold_id, steps=steps, start_lr=start_lr, end_lr=end_lr, skip_bad=skip_bad, echo=click.echo,
        sources=sources(cfg))


# ---------------------------------------------------------------- many experiments (Ray)


def address_option(f):
    return click.option("--address", help="join a running Ray cluster: auto, or HOST:PORT (default: start a "
                        "private local Ray on this machine and stop it after)")(f)




@cli.command()
@config_option
@click.option("--exp", "exps", multiple=True, required=True, help="experiment (repeatable)")
@click.option("--fold", "fold_ids", type=int, multiple=True, help="fold to train (repeatable)")
@click.option("--all-folds", is_flag=True, help="every fold of folds.csv")
@click.option("--set", "overrides", multiple=True, help="override a config key for every job: --set train.epochs=3")
@click.option("--gpus-per-job", type=float, help="GPUs per job (default 1 when the cluster has GPUs, else 0)")
@click.option("--cpus-per-job", type=int, help="CPUs per job (default: CPUs per GPU, or 1 on CPU-only machines)")
@address_option
@click.option("--max-retries", default=2, show_default=True, help="retries (with --resume) of a job that died")
@click.option("--then-predict", is_flag=True, help="run comp predict for each experiment whose folds all finished")
@click.option("--live/--no-live", default=None, help="redraw one table in place (default: when on a terminal)")
@click.option("--job-timeout", type=float, default=None, metavar="SECONDS",
              help="kill a job that trains longer than this (all its attempts) and report it as failed")
def launch(config_path, exps, fold_ids, all_folds, overrides, gpus_per_job, cpus_per_job, address, max_retries,
           then_predict, live, job_timeout):
    """Train (experiment x fold) jobs on Ray: each a `comp train --exp E --fold K` process.

    A finished fold is skipped, a fold locked by another launch is not trained twice, a job whose process
    died is retried with --resume. Logs: runs/EXP/fold_K/train.log.

    \b
    comp launch --exp base --exp convnext --all-folds
    comp launch --exp base --fold 0 --fold 1 --set train.epochs=3 --gpus-per-job 1
    comp launch --exp base --all-folds --address auto      (after `ray start --head`)
    """
    from comp.orchestrate.launch import launch as run

    if not fold_ids and not all_folds:
        raise click.UsageError("say which folds: --fold K (repeatable) or --all-folds")
    if fold_ids and all_folds:
        raise click.UsageError("pass --fold K or --all-folds, not both")
    result = run(config_path, list(exps), folds=None if all_folds else list(fold_ids), overrides=overrides,
                 gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, address=address, max_retries=max_retries,
                 then_predict=then_predict, echo=click.echo, live=live, job_timeout=job_timeout)
    sys.exit(0 if result.ok else 1)


@cli.command()
@config_option
@click.option("--exp", required=True, help="experiment whose config the trials start from")
@click.option("--space", "space_path", required=True, type=click.Path(dir_okay=False),
              help="YAML: config key -> distribution, e.g. train.lr: {loguniform: [1e-4, 1e-2]}")
@click.option("--trials", default=20, show_default=True, help="trials (Optuna samples them)")
@click.option("--folds", "folds_", default="0", show_default=True, help="folds each trial trains: 0 or 0,1,2")
@click.option("--metric", type=click.Choice(["val_macro_f1", "val_acc", "val_loss", "val_score"]),
              default="val_macro_f1", show_default=True, help="what ASHA and Optuna optimise (val_score: data.metric)")
@click.option("--set", "overrides", multiple=True, help="override a config key for every trial")
@click.option("--cpus-per-trial", type=int, help="default: CPUs per GPU, or 1 on CPU-only machines")
@click.option("--gpus-per-trial", type=float, help="default: 1 when the cluster has GPUs, else 0")
@click.option("--grace-period", default=1, show_default=True, help="ASHA: epochs before a trial may be stopped")
@click.option("--reduction-factor", default=2, show_default=True, help="ASHA: 1/N of the trials go on at each rung")
@click.option("--seed", default=0, show_default=True, help="Optuna sampler seed")
@address_option
@click.option("--resume", is_flag=True, help="continue an interrupted search")
def tune(config_path, exp, space_path, trials, folds_, metric, overrides, cpus_per_trial, gpus_per_trial,
         grace_period, reduction_factor, seed, address, resume):
    """Hyper-parameter search with Ray Tune (Optuna sampler + ASHA) -> runs/EXP-tune/, configs/EXP-best.yaml.

    \b
    space file (configs/base.space.yaml):
      train.lr: {loguniform: [1e-4, 1e-2]}
      train.weight_decay: {uniform: [0.0, 0.1]}
      model.name: {choice: [resnet18, convnext_atto]}
      augment.preset: {choice: [light, medium]}
      train.loss: {choice: [ce, ce+soft_f1]}
    \b
    comp tune --exp base --space configs/base.space.yaml --trials 40 --set train.epochs=6
    comp launch --exp base-best --all-folds
    """
    from comp.orchestrate.tune import tune as run

    try:
        folds = "all" if folds_.strip().lower() == "all" else [int(k) for k in folds_.split(",") if k.strip()]
    except ValueError:
        raise click.UsageError(f"--folds {folds_!r}: fold numbers separated by commas, e.g. 0 or 0,1, or all") from None
    out = run(config_path, exp, space_path, trials=trials, folds=folds, metric=metric, overrides=overrides,
              address=address, resume=resume, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
              grace_period=grace_period, reduction_factor=reduction_factor, seed=seed, echo=click.echo)
    sys.exit(0 if out["best"] is not None else 1)


@cli.command()
@config_option
@click.option("--budget", required=True, help="wall-time budget: 20m, 90s, 1h (the run ends within it + 10%)")
@click.option("--gpus", type=int, help="GPUs the search's trials share (default: the GPUs torch sees)")
@address_option
@click.option("--resume", is_flag=True, help="continue after a kill (runs/auto/plan.json); done stages are kept")
@click.option("--overwrite", is_flag=True, help="start again: removes runs/auto*, configs/auto-*.yaml")
@click.option("--models", help="candidate timm models, comma-separated (default: a list fitted to the hardware)")
def auto(config_path, budget, gpus, address, resume, overwrite, models):
    """From comp.yaml to submissions/auto.csv within a time budget: plan -> check -> folds -> search (fold 0) ->
    best config on every fold -> second config -> full refit -> TTA predict -> ensemble -> report.

    \b
    comp init data/comp && comp auto --budget 20m      # -> submissions/auto.csv, reports/auto/index.html
    comp auto --budget 20m --resume                    # after a kill: finished stages are not redone
    """
    from comp.orchestrate.auto import run_auto

    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    run_auto(config_path, budget, gpus=gpus, address=address, resume=resume, overwrite=overwrite, models=names,
             echo=click.echo, from_process_start=True)


@cli.command()
@click.option("--runs", "runs_dir", default="runs", show_default=True, help="folder of experiment runs")
@click.option("--ledger", "ledger_path", default="submissions/ledger.csv", show_default=True)
@click.option("--out", default="reports/leaderboard.html", show_default=True)
@click.option("--trials", is_flag=True, help="also list comp tune trials (runs/EXP-tune/trial_NNN)")
def leaderboard(runs_dir, ledger_path, out, trials):
    """Every experiment in runs/: CV and fold spread, model, input, epochs, loss, augmentation, speed, time,
    parameters, submissions; and CV against the public leaderboard (comp ledger lb) -> table +
    reports/leaderboard.html."""
    from comp.orchestrate.leaderboard import leaderboard as run

    run(runs_dir, ledger_path=ledger_path, out=out, trials=trials, echo=click.echo)


@cli.group()
def ledger():
    """submissions/ledger.csv: what Kaggle said of each submission (comp ledger lb), shown by comp leaderboard."""


@ledger.command("lb")
@click.argument("name")
@click.argument("score", type=float)
@click.option("--private", type=float, help="the private leaderboard score, once the competition has ended")
@click.option("--ledger", "ledger_path", default="submissions/ledger.csv", show_default=True)
def ledger_lb(name, score, private, ledger_path):
    """Record the public (and private) leaderboard SCORE Kaggle reported for submission NAME -> submissions/lb.csv.

    comp leaderboard then shows CV and public score side by side, their rank correlation, the CV - LB gap of each
    submission against its fold spread, and which figure to trust.

    \b
    comp ledger lb blend1 0.8421
    comp ledger lb blend1 0.8421 --private 0.8377
    """
    from comp.infer.ledger import record_lb

    _, said = record_lb(name, score, private, ledger_path=ledger_path)
    click.echo(said)


# ---------------------------------------------------------------- inference


@cli.command()
@train_options
@click.option("--tta", help="comma-separated views (default infer.tta): identity, hflip, vflip, hvflip, rot90, "
              "rot270, shift, shift_ul, scale<f> (0.5-2, e.g. scale0.9)")
@click.option("--oof", is_flag=True, help="also rewrite runs/EXP/oof.csv with the same views (trainer's kept as "
              "oof.train.csv), so ensemble weights are fit on what the test sees")
@click.option("--overwrite", is_flag=True, help="replace an existing runs/EXP/test.csv")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="onnxruntime: run the `comp export` files of runs/EXP/export/ (CPU, one process)")
@click.option("--use", type=click.Choice(["folds", "full", "both"]), default="folds", show_default=True,
              help="fold models -> test.csv; full_s* models (comp train --full) -> test_full.csv; both, each group "
              "weighing half -> test_both.csv")
@click.option("--fold", "fold_ids", type=int, multiple=True,
              help="only this fold's model -> runs/EXP/test_foldK.csv (repeatable: one file each)")
def predict(config_path, exp, overrides, tta, oof, overwrite, engine, use, fold_ids):
    """Test predictions of EXP's fold models with TTA -> runs/EXP/test.csv.

    Probabilities are averaged over the views, then over the models; several processes shard the images.

    \b
    comp predict --exp base --tta identity,hflip --oof
    comp predict --exp base --use full         # runs/base/test_full.csv (after comp train --full)
    comp predict --exp base --use both         # runs/base/test_both.csv: 0.5 folds' mean + 0.5 full mean
    comp predict --exp base --fold 0           # runs/base/test_fold0.csv: one model's prediction
    torchrun --nproc_per_node 2 -m comp predict --exp base
    comp predict --exp base --engine onnxruntime --overwrite   (after comp export --exp base --all-folds)
    """
    from comp.infer.predict import predict as run

    views = [v.strip() for v in tta.split(",") if v.strip()] if tta else None
    run(load(config_path, exp, overrides), tta=views, oof=oof, overwrite=overwrite, echo=click.echo, engine=engine,
        use=use, folds=list(fold_ids))


@cli.command()
@config_option
@click.option("--exp", "exps", multiple=True, required=True, help="experiment to include (repeatable)")
@click.option("--weights", default="auto", show_default=True, help="auto, or w1,w2,... in --exp order")
@click.option("--method", type=click.Choice(["mean", "geometric", "rank"]), default="mean", show_default=True)
@click.option("--tune-bias", is_flag=True, help="data.metric macro_f1: fit per-class log-probability biases")
@click.option("--tune-thresholds", is_flag=True, help="data.metric qwk: fit cut points on the expected grade")
@click.option("--temperature", is_flag=True, help="data.metric log_loss: fit a softmax temperature on the OOF")
@click.option("--name", required=True, help="submission name -> submissions/NAME.csv")
@click.option("--overwrite", is_flag=True, help="replace an existing submission of that name")
@click.option("--use", type=click.Choice(["folds", "full", "both"]), default="folds", show_default=True,
              help="test probabilities from runs/EXP/test.csv, test_full.csv or test_both.csv (comp predict --use); "
              "weights and CV always come from the fold models' OOF")
@click.option("--label-shift", type=click.Choice(["off", "on", "auto"]), default="off", show_default=True,
              help="macro_f1: estimate the test's class prior from the blend's test predictions and tune and score "
              "for it (auto: only when it differs from train.csv's by 0.05 of total variation)")
def ensemble(config_path, exps, weights, method, tune_bias, tune_thresholds, temperature, name, overwrite, use,
             label_shift):
    """Blend experiments into submissions/NAME.csv and log it in submissions/ledger.csv.

    auto weights maximise the OOF data.metric (greedy selection with replacement). Post-processing fit on the
    OOF, applied only when its cross-validated gain is positive: --tune-bias (macro_f1) per-class
    log-probability biases, --tune-thresholds (qwk) cut points on the expected grade, --temperature (log_loss)
    temperature scaling. The submission has the shape (a label column, or one probability column per class),
    header, ids and id order of sample_submission.csv and passes the checks of `comp score`.

    \b
    comp ensemble --exp base --exp big --tune-bias --name blend1
    comp ensemble --exp base --exp big --weights 0.7,0.3 --method geometric --name blend2
    comp ensemble --exp base --use full --name refit     # after comp predict --exp base --use full
    comp ensemble --exp base --tune-bias --label-shift auto --name lt   # long tail, balanced test set
    """
    from comp.infer.ensemble import ensemble as run

    run(load(config_path), list(exps), weights=weights, method=method, tune_bias=tune_bias, name=name,
        overwrite=overwrite, echo=click.echo, tune_thresholds=tune_thresholds, temperature=temperature, use=use,
        label_shift=label_shift)


# ---------------------------------------------------------------- reports


@cli.command()
@config_option
@click.option("--out", default="reports/eda", show_default=True,
              help="report folder (an earlier report there is replaced)")
@click.option("--max-images", type=int, help="hash and measure at most this many train images (a random sample)")
@click.option("--near", "near_threshold", type=int, default=3, show_default=True,
              help="phash bits that may differ for a near duplicate")
@click.option("--workers", type=int, help="processes (default: all cores)")
def eda(config_path, out, max_images, near_threshold, workers):
    """Data report: class counts, sizes, colours, duplicates and leakage -> OUT/index.html.

    Exits 0 when images are broken: they are listed in the report (and OUT/check.csv).
    """
    from comp.reports.eda import run_eda

    run_eda(load(config_path), out=out, echo=click.echo, max_images=max_images, near_threshold=near_threshold,
            workers=workers)


@cli.command()
@config_option
@click.option("--exp", required=True)
@click.option("--out", help="default reports/EXP")
def analyze(config_path, exp, out):
    """Error analysis of EXP's OOF: confusion matrix, confident mistakes, Grad-CAM -> OUT/index.html."""
    from comp.reports.analyze import run_analyze

    run_analyze(load(config_path, exp), exp=exp, out=out or f"reports/{exp}", echo=click.echo)


# ---------------------------------------------------------------- serving




@cli.command()
@config_option
@click.option("--exp", "exps", multiple=True, required=True,
              help="experiment (repeatable: blended with their submissions/ledger.csv weights)")
@click.option("--port", default=7860, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="0.0.0.0 to let other machines in (needs --auth)")
@click.option("--share/--no-share", default=False, show_default=True,
              help="a public gradio.live link (needs internet and --auth)")
@click.option("--auth", envvar="COMP_APP_AUTH", default=None, metavar="USER:PASSWORD",
              help="Gradio's login page in front of the app (or env COMP_APP_AUTH); required beyond loopback")
@click.option("--max-pixels", default=25_000_000, show_default=True,
              help="larger uploads are refused from their header, before decoding")
@click.option("--examples/--no-examples", default=True, show_default=True,
              help="show test images and the OOF's confidently wrong training images (competition data)")
@click.option("--queue-size", default=16, show_default=True, help="requests waiting beyond this are refused")
@click.option("--cache-ttl", default=3600, show_default=True,
              help="seconds uploads and Grad-CAM files are kept on the server")
@click.option("--top-k", default=5, show_default=True, help="classes shown")
def app(config_path, exps, port, host, share, auth, max_pixels, examples, queue_size, cache_ttl, top_k):
    """Serve a Gradio app of EXP's fold ensemble: upload/webcam/paste -> top-k, Grad-CAM, examples, info.

    Models are loaded once; the page works offline (analytics off, no CDN).

    \b
    comp app --exp base                       # http://127.0.0.1:7860
    comp app --exp base --exp big --port 8080 # a blend, with the ledger's weights
    COMP_APP_AUTH=me:secret comp app --exp base --host 0.0.0.0 --no-examples
    """
    from comp.serve.app import serve

    serve(config_path, list(exps), host=host, port=port, share=share, top_k=top_k, echo=click.echo, auth=auth,
          max_pixels=max_pixels, examples=examples, queue_size=queue_size, cache_ttl=cache_ttl)


@cli.command()
@config_option
@click.option("--exp", required=True)
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--fold", "fold_ids", type=int, multiple=True, help="fold to export (repeatable)")
@click.option("--all-folds", is_flag=True, help="every fold (the default when no --fold is given)")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset")
@click.option("--dynamic-batch", is_flag=True, help="any batch size (default: batch 1)")
@click.option("--overwrite", is_flag=True, help="replace existing exports")
def export(config_path, exp, fmt, fold_ids, all_folds, opset, dynamic_batch, overwrite):
    """Export EXP's fold models -> runs/EXP/export/fold_K.onnx + export.json, checked against torch.

    Input uint8 NHWC at the training size, normalisation inside, output probabilities.

    \b
    comp export --exp base --format onnx --all-folds
    comp export --exp base --fold 0 --opset 18 --dynamic-batch --overwrite
    comp predict --exp base --engine onnxruntime --overwrite
    """
    from comp.serve.onnx import export as run

    if fold_ids and all_folds:
        raise click.UsageError("pass --fold K or --all-folds, not both")
    run(load(config_path, exp), folds=list(fold_ids) or None, opset=opset, dynamic_batch=dynamic_batch,
        overwrite=overwrite, echo=click.echo)


@cli.command()
@config_option
@click.argument("name")
@click.option("--competition", required=True, help="the competition's slug (its URL): /kaggle/input/<slug>/")
@click.option("--dataset-id", required=True, help="OWNER/SLUG of the Kaggle dataset the bundle uploads as")
@click.option("--onnx", is_flag=True, help="ship comp export's ONNX fold models (run with onnxruntime)")
@click.option("--include", multiple=True, help="also ship this installed distribution's wheel (repeatable)")
@click.option("--exclude", multiple=True, help="do not ship this dependency: Kaggle's image has it (repeatable)")
@click.option("--platform", default="manylinux_2_35_x86_64", show_default=True,
              help="Kaggle's wheel platform: manylinux wheels up to this glibc fit")
@click.option("--python-version", "python", default="3.11", show_default=True, help="Kaggle's Python")
@click.option("--gpu", is_flag=True, help="kernel-metadata.json enable_gpu")
@click.option("--time-limit", "limit_h", type=float, default=9.0, show_default=True, help="Kaggle's limit, hours")
@click.option("--test-images", type=int, help="hidden test size for the estimate (default: the sample's rows)")
@click.option("--licence", default="other", show_default=True, help="dataset-metadata.json licence name")
@click.option("--out", default="bundle", show_default=True, help="folder of bundles: OUT/NAME/")
@click.option("--overwrite", is_flag=True, help="replace an existing bundle of that name")
@click.option("--check", is_flag=True, help="then run the notebook here as Kaggle would (offline) and compare")
def bundle(config_path, name, competition, dataset_id, onnx, include, exclude, platform, python, gpu, limit_h,
           test_images, licence, out, overwrite, check):
    """Ledger submission NAME as a Kaggle code-competition notebook: bundle/NAME/{dataset,notebook}/.

    The dataset holds the members' models, the recipe (views, weights, biases or thresholds, label shift) and the
    wheels of comp and what Kaggle's image lacks; the notebook installs them offline and replays comp predict
    and comp ensemble on the hidden test. Prints the size, the run-time estimate and the two kaggle commands.

    \b
    comp bundle auto --competition aptos2019-blindness-detection --dataset-id me/aptos-comp
    comp bundle blend1 --competition my-comp --dataset-id me/my-comp-models --check   # offline run here
    comp bundle blend1 --competition my-comp --dataset-id me/my-comp-models --exclude grad-cam --gpu
    """
    from comp.serve.bundle import Request, make

    req = Request(name=name, competition=competition, dataset_id=dataset_id, include=include, exclude=exclude,
                  platform=platform, python=python, gpu=gpu, limit_h=limit_h, test_images=test_images, out=out,
                  licence=licence)
    make(load(config_path), config_path, req, onnx=onnx, overwrite=overwrite, check=check, echo=click.echo)


# ---------------------------------------------------------------- winning techniques


@cli.command()
@config_option
@click.option("--exp", required=True, help="a finished experiment (its runs/EXP/oof.csv)")
@click.option("--out", help="default reports/EXP (relabel.csv there, the gallery in OUT/relabel/)")
@click.option("--gallery", type=int, default=60, show_default=True, help="suspects shown with Grad-CAM")
@click.option("--overwrite", is_flag=True, help="replace an existing relabel.csv (and the marks in it)")
def relabel(config_path, exp, out, gallery, overwrite):
    """Likely label errors in EXP's OOF (confident learning) -> OUT/relabel.csv + a Grad-CAM gallery.

    \b
    comp relabel --exp base                  # reports/base/relabel.csv, reports/base/relabel/index.html
    # mark rows 'accept' (take the suggested label) or 'drop' in the accept column, then in a new experiment
    # configs/clean.yaml:  data: {relabel: reports/base/relabel.csv}
    comp train --exp clean --all-folds       # training labels change; validation keeps the given labels
    """
    from comp.techniques.relabel import run_relabel

    run_relabel(load(config_path, exp), exp=exp, out=out or f"reports/{exp}", gallery=gallery,
                overwrite=overwrite, echo=click.echo)


@cli.command()
@config_option
@click.option("--from", "source", required=True,
              help="the teacher: an experiment (runs/T/test_folds.csv from comp predict) or a ledger submission")
@click.option("--exp", required=True, help="the new experiment that trains on the pseudo-labels")
@click.option("--threshold", type=float, help="keep test rows whose top probability reaches this (e.g. 0.9)")
@click.option("--top", type=float, help="or keep this fraction of the most confident test rows (e.g. 0.5)")
@click.option("--soft", is_flag=True, help="keep the teacher's probabilities (soft-target cross-entropy)")
@click.option("--overwrite", is_flag=True, help="replace an existing folds/pseudo/EXP/")
def pseudo(config_path, source, exp, threshold, top, soft, overwrite):
    """Fold-safe pseudo-labels of the test set for a new experiment -> folds/pseudo/EXP/ + configs/EXP.yaml.

    Fold k of EXP trains on the test rows labelled by the teacher's fold-k model(s) only, which never saw fold k's
    validation rows; test images never enter a validation fold, so EXP's CV stays honest.

    \b
    comp predict --exp base                               # writes runs/base/test_folds.csv
    comp pseudo --from base --exp base_pl --threshold 0.9
    comp train --exp base_pl --all-folds
    """
    from comp.techniques.pseudo import make_pseudo

    make_pseudo(load(config_path, None), source, exp, threshold=threshold, top=top, soft=soft, overwrite=overwrite,
                echo=click.echo)


@cli.command()
@train_options
@click.option("--per-class", type=int, help="make N images of each (chosen) class per fold")
@click.option("--fill-to", type=int, help="or top each class of a fold's training rows up to F images (default: "
              "to the median class count)")
@click.option("--classes", help="only these classes, comma-separated")
@click.option("--fold", "fold_ids", type=int, multiple=True, help="only this fold (repeatable; default every fold)")
@click.option("--kind", type=click.Choice(["gan", "diffusion"]), default="gan", show_default=True,
              help="gan: a small class-conditional DCGAN (one forward per image); diffusion: a diffusers UNet (DDIM)")
@click.option("--steps", type=int, default=0, help="generator training steps per fold [default: gan 3000, "
              "diffusion 1000]")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.0, help="[default: gan 2e-4, diffusion 1e-3]")
@click.option("--channels", help="widths, comma-separated (default by size up to 32 px: gan 128,64,32,16, from "
              "size/8 up; diffusion UNet 32,64,64)")
@click.option("--sample-steps", type=int, default=20, show_default=True, help="DDIM steps per image (diffusion)")
@click.option("--guidance", type=float, default=1.0, show_default=True,
              help="classifier-free guidance scale (1: none; 2-3 sharpens classes at twice the sampling cost)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, default=10.0, show_default=True,
              help="stop a fold's generator training after this long (0: no limit); the steps reached are recorded")
@click.option("--resume", is_flag=True, help="continue an interrupted folds/synth/EXP/")
@click.option("--overwrite", is_flag=True, help="replace an existing folds/synth/EXP/")
@click.option("--report/--no-report", default=True, show_default=True,
              help="measure the images with runs/EXP's fold classifiers -> reports/EXP/synth/index.html")
def synth(config_path, exp, overrides, per_class, fill_to, classes, fold_ids, kind, steps, batch_size, lr, channels,
          sample_steps, guidance, seed, max_minutes, resume, overwrite, report):
    """Fold-safe synthetic images: a class-conditional generator per fold -> folds/synth/EXP/fold_k/.

    Fold k's generator trains on the rows of the other folds only; `data.synthetic: EXP` adds fold k's images to
    fold k's training rows only, never to validation or the OOF.

    \b
    comp synth --exp base --fill-to 200                  # rare classes topped up to 200 images per fold
    comp train --exp base_syn --set data.synthetic=base --all-folds
    """
    from comp.techniques.synth import SynthOptions, make_synth, parse_ints
    from comp.techniques.synth_report import synth_report

    opts = SynthOptions(per_class=per_class, fill_to=fill_to, kind=kind, steps=steps, batch_size=batch_size, lr=lr,
                        classes=[c.strip() for c in classes.split(",")] if classes else None,
                        channels=parse_ints(channels, "--channels"), sample_steps=sample_steps, guidance=guidance,
                        seed=seed, max_minutes=max_minutes)
    cfg = load(config_path, exp, overrides)  # the experiment's input.size; its fold classifiers judge the images
    make_synth(cfg, opts, folds=list(fold_ids) or None, overwrite=overwrite, resume=resume, echo=click.echo)
    if report:
        synth_report(cfg, echo=click.echo)


def main():
    cli(prog_name="comp")


if __name__ == "__main__":
    main()
