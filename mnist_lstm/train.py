"""The training run: config -> objects -> Trainer.fit -> Trainer.test on the best checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from mnist_lstm.config import validate

log = logging.getLogger(__name__)


def _hyperparameters(cfg: DictConfig) -> dict:
    """The flat, resolved knobs worth comparing runs by, for TensorBoard's HPARAMS tab."""
    keys = ["layer_num", "hidden_size", "dropout", "lr", "batch_size", "max_steps", "seed"]
    params = {key: cfg[key] for key in keys if key in cfg}
    params["cell"] = cfg.model.cell
    params["forget_bias"] = cfg.model.forget_bias
    return params


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one model as `cfg` says; return the final metrics (val/acc_best, test/acc...)."""
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)

    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()  # fail on missing data now, before a model or logger exists

    L.seed_everything(cfg.seed, workers=True)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = [hydra.utils.instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    loggers: list[Logger] = [hydra.utils.instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    log.info(f"Run directory: {output_dir.resolve()}")
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            log.info(f"Watch it with: tensorboard --logdir {Path(logger.log_dir).resolve()}")

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("No best checkpoint (e.g. fast_dev_run): testing the final weights")
        log.info(f"Testing {best or 'the final weights'} on the official 10,000 test images")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    # Hyperparameters against real metrics (not Lightning's placeholder hp_metric).
    summary = {f"hparams/{k.replace('/', '_')}": metrics[k] for k in ("val/acc_best", "test/acc") if k in metrics}
    for logger in loggers:
        logger.log_hyperparams(_hyperparameters(cfg), metrics=summary)
        logger.finalize("success")
    log.info("Final metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    OmegaConf.save(OmegaConf.create(metrics), output_dir / "metrics.yaml")
    return metrics
