"""Orbax checkpoints behind one small class.

Async saves every N steps, the last K kept, a forced save on preemption
(SIGTERM) and at the end; `wait()` before exit. Orbax commits a step
atomically (written to a temporary directory, renamed when complete), so an
interrupted save never looks finished. Restore takes an abstract state
carrying the *target* shardings, so a checkpoint restores onto another
mesh shape.
"""

from __future__ import annotations

import orbax.checkpoint as ocp

from bali_jax import storage


class Checkpointer:
  def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
    self.directory = storage.display(directory)  # local or gs://
    self.mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
    return self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                          force=force)

  def restore(self, step: int, abstract_state):
    out = self.mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def wait(self) -> None:
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.wait_until_finished()
    self.mngr.close()
