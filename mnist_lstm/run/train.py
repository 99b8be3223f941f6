"""The training run: config -> objects -> Trainer.fit -> Trainer.test on the best checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from mnist_lstm import fast
from mnist_lstm.checkpoint import load_checkpoint
from mnist_lstm.config.schema import hyperparameters

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one model as `cfg` says; return the final metrics (val/acc_best, test/acc...). The command
    line has checked `cfg`, and built its objects once (mnist_lstm/cli.py, mnist_lstm/run/dry_run.py)."""
    output_dir = Path(cfg.paths.output_dir)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data, batch_size=cfg.batch_size)
    datamodule.prepare_data()  # fail on missing data now, before a model or logger exists

    L.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    ckpt_path = cfg.get("ckpt_path")
    # A resumed run continues its TensorBoard curves: what the stopped run logged after its checkpoint is purged.
    purge = {"purge_step": int(load_checkpoint(ckpt_path).get("global_step", 0))} if ckpt_path else {}
    loggers: list[Logger] = [
        hydra.utils.instantiate(c, **(purge if str(c.get("_target_", "")).endswith("TensorBoardLogger") else {}))
        for c in (cfg.get("logger") or {}).values()
        if c is not None
    ]
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_arguments(cfg)
    )
    fast.speed_up(model, cfg.speed.loop, cfg.speed.compile, trainer.strategy.root_device)

    log.info(f"Run directory: {output_dir.resolve()}")
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            log.info(f"Watch it with: tensorboard --logdir {Path(logger.log_dir).resolve()}")

    # SIGTERM or Ctrl-C: CheckpointOnInterrupt saves last.ckpt, says how to resume and sets the exit status
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint (e.g. fast_dev_run): testing the final weights")
        log.info(f"Testing {best or 'the final weights'} on the official 10,000 test images")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    # Hyperparameters against real metrics (not Lightning's placeholder hp_metric).
    summary = {f"hparams/{k.replace('/', '_')}": metrics[k] for k in ("val/acc_best", "test/acc") if k in metrics}
    for logger in loggers:
        logger.log_hyperparams(hyperparameters(cfg), metrics=summary)
        logger.finalize("success")
    log.info("Final metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    if trainer.is_global_zero:  # under DDP every process gets here with the same (synchronised) metrics
        OmegaConf.save(OmegaConf.create(metrics), output_dir / "metrics.yaml")
    return metrics


def task(cfg: DictConfig) -> float | None:
    """scripts/train.py's Hydra task: train, and return the metric Hydra sweepers optimise (`optimized_metric`)."""
    return train(cfg).get(cfg.get("optimized_metric"))


def build_model(cfg: DictConfig) -> L.LightningModule:
    """conf/model/ with the top-level knobs, as the module class of the run's speed setting (conf/speed/)."""
    return hydra.utils.instantiate(
        cfg.model,
        hidden_size=cfg.hidden_size,
        layer_num=cfg.layer_num,
        dropout=cfg.dropout,
        optimizer={"lr": cfg.lr},
        _target_=fast.module_class(cfg.speed.cuda_graph),
    )


def trainer_arguments(cfg: DictConfig) -> dict[str, int]:
    """The budget, and validation every `val_every` steps counted across epochs (at least once in a shorter run)."""
    return {"max_steps": cfg.max_steps, "val_check_interval": min(cfg.val_every, cfg.max_steps)}
