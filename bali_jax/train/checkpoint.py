"""Orbax checkpoints behind one small class.

Async saves every N steps, the last K kept, a forced save on preemption
(SIGTERM) and at the end; `wait()` before exit. Orbax commits a step
atomically (written to a temporary directory, renamed when complete), so an
interrupted save never looks finished. Restore takes an abstract state
carrying the *target* shardings, so a checkpoint restores onto another
mesh shape.

Replica-parallel saving (Orbax's default off GPU) splits every replicated
array into one slice per replica so that several hosts share the write.
In a single process every replica is local: the split only costs one
dispatched slice per array and device (measured: 1,274 of them, 2-5 s of
every save of the tiny state on 8 CPU devices). So it is on only when
there are several processes; the files are the same format either way.
"""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp

from bali_jax import storage


def _type_handlers(replica_parallel: bool):
  """Orbax's standard handlers for the leaves a train state holds, with
  replica-parallel array saving on or off."""
  th = ocp.type_handlers
  scalar = th.ScalarHandler()
  return th.create_type_handler_registry(
      (int, scalar), (float, scalar), (bytes, scalar), (np.number, scalar),
      (np.ndarray, th.NumpyHandler()), (str, th.StringHandler()),
      (jax.Array, th.ArrayHandler(use_replica_parallel=replica_parallel)))


class Checkpointer:
  def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
    self.directory = storage.display(directory)  # local or gs://
    registry = _type_handlers(replica_parallel=jax.process_count() > 1)
    self.mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            create=True),
        item_handlers={
            "state": ocp.PyTreeCheckpointHandler(
                type_handler_registry=registry),
            "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.mngr.all_steps())

  def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
    return self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)),
                          force=force)

  def restore(self, step: int, abstract_state):
    """The state of `step` on the shardings `abstract_state` carries."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(
        abstract_state)
    out = self.mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(abstract_state,
                                     restore_args=restore_args),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def wait(self) -> None:
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.wait_until_finished()
    self.mngr.close()
