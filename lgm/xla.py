"""The XLA compiler options lgm compiles its programs with, per backend; `jit`: jax.jit with them; and
`materialize`, which stores a value that XLA would otherwise recompute in each of its consumers.

On the CPU backend XLA hands dots, reductions and convolutions to YNNPACK by default. lgm keeps YNNPACK for
dots and reductions and leaves convolutions to XLA's own emitter, which is faster at the small feature maps
of latent models: on 2 CPU cores the t2i job's latent score model trains in ~0.85 of the time and evaluates
in ~0.7, and the DDPM's train step is unchanged or slightly faster (docs/results.md, "Against PyTorch").

XLA's CPU compiler also removes optimization barriers before it fuses, and it fuses a chain of elementwise
operations into every consumer of the chain's result. In a train step the gradient of a residual stream is
such a chain, one `add` per block, with many consumers (weight gradients, normalisation statistics): each
consumer recomputed the chain from its start. lgm keeps the barriers (`xla_disable_hlo_passes`) and puts
one on every residual sum (`materialize`): the t2i job's latent score model then trains in ~0.87 of the time.
GPUs and TPUs get no options, and `materialize` is the identity there.

Your own choice wins: an option that XLA_FLAGS names is left to it, and LGM_XLA_OPTIONS=0 turns lgm's options
off. A jaxlib that does not know an option gets none (one warning).
"""

import functools
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

CPU_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE',
    'xla_disable_hlo_passes': 'cse_barrier_expander',  # keep optimization barriers (`materialize`)
}


@functools.cache
def compiler_options() -> dict[str, str]:
  """The options for programs on the default backend (empty where lgm has none to give)."""
  if jax.default_backend() != 'cpu' or os.environ.get('LGM_XLA_OPTIONS') == '0':
    return {}
  options = {name: value for name, value in CPU_OPTIONS.items() if name not in os.environ.get('XLA_FLAGS', '')}
  try:  # a jaxlib without these options refuses to compile with them (ahead of time: callable inside a trace)
    jax.jit(lambda x: x + 1, compiler_options=options).lower(jax.ShapeDtypeStruct((), jnp.float32)).compile()
  except Exception as error:  # noqa: BLE001 -- XLA's error type varies between jaxlib versions
    logging.warning('lgm compiles with XLA defaults: this jaxlib refused %s (%s)', options, error)
    return {}
  return options


def materialize(x: jnp.ndarray) -> jnp.ndarray:
  """`x`, which the compiled program stores once instead of recomputing it inside each consumer, and so its
  cotangent under autodiff (an optimization barrier). The identity where lgm's options do not keep the
  barriers: there XLA would remove them anyway (CPU), or their effect was not measured (GPU, TPU)."""
  if compiler_options().get('xla_disable_hlo_passes') != CPU_OPTIONS['xla_disable_hlo_passes']:
    return x
  return jax.lax.optimization_barrier(x)


def _at_top_level() -> bool:
  """Whether no transformation is tracing here: jax takes compiler options only for top-level programs."""
  try:
    from jax._src import core  # no public equivalent in jax 0.10-0.11
    return isinstance(core.trace_ctx.trace, core.EvalTrace)
  except (ImportError, AttributeError):  # other jax internals: no options rather than an error
    return False


def jit(fun: Callable, **jit_kwargs: Any) -> Callable:
  """`jax.jit(fun, **jit_kwargs)` compiled with `compiler_options()` when called as a program of its own;
  traced inside another program (a sampler inside a train step), it is a plain nested jit.

  The options are read at the first call (or `.lower`), not here: a module that decorates its functions
  with this does not start a backend when imported. Works as a method decorator like jax.jit
  (`functools.partial(xla.jit, static_argnums=0)`)."""
  nested = jax.jit(fun, **jit_kwargs)

  @functools.cache
  def top_level():
    options = compiler_options()
    return jax.jit(fun, compiler_options=options, **jit_kwargs) if options else nested

  @functools.wraps(fun)
  def call(*args, **kwargs):
    return (top_level() if _at_top_level() else nested)(*args, **kwargs)

  call.lower = lambda *args, **kwargs: top_level().lower(*args, **kwargs)
  return call
