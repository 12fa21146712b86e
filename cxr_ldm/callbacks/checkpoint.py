"""Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` always holds the end of a finished run.

Lightning saves ``last.ckpt`` at the end of training only when the process has not written it yet
(``on_train_end`` checks a flag of the process, not the step). With ``every_n_train_steps`` a run that ends
between two periodic saves therefore keeps an older ``last.ckpt`` (its last steps are lost to ``ckpt_path=last``
and to export), while the same run resumed from a mid-epoch checkpoint writes its end: the two would differ.
Here ``last.ckpt`` is written at the end of training whenever the step it holds is not the run's last step.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (every option the same) whose ``last.ckpt`` is the run's end once training ends."""

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint``'s key: checkpoints written before (or by Lightning's own) resume its state."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
