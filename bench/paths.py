"""Which execution paths a bench run uses, so "before" and "after" run in the same process.

``fast``   everything this package does by default: the KV prefix, conditions stacked into
           shared forwards, forwards that start at the first edited layer, steering's
           label-rows-only output head, clean reads on the template's shared tokens
           (``ConditionRunner.share_prefix``) and the sample generations in one batched
           ``generate`` (``steering.generation.generate_stacked``);
``prefix`` the engine as it was before stacking and layer skipping: the KV prefix only;
``naive``  no fast path at all: every condition a full forward through every layer, one per
           forward (steering keeps its value stacking, which it always had).

The modes are made by patching the engine for the duration of a block (``with use_paths(mode):``);
the library code is the same, so a difference in the counts is the fast paths' doing.
"""

from __future__ import annotations

from contextlib import contextmanager

MODES = ("fast", "prefix", "naive")


@contextmanager
def use_paths(mode: str):
    from emolens.engine import runner
    from emolens.steering import generation

    if mode not in MODES:
        raise SystemExit(f"unknown paths mode {mode!r}: use one of {MODES}")
    init, prefix_cache = runner.ConditionRunner.__init__, runner.prefix_cache
    share, stacked = runner.ConditionRunner.share_prefix, generation.generate_stacked

    def plain_init(self, *args, **kwargs):
        kwargs.update(skip=False, stack_rows=0, label_logits=False)
        init(self, *args, **kwargs)

    try:
        if mode != "fast":
            runner.ConditionRunner.__init__ = plain_init
            runner.ConditionRunner.share_prefix = lambda self, *args, **kwargs: False  # whole prompts
            generation.generate_stacked = lambda *args, **kwargs: None  # one generate per setting
        if mode == "naive":
            runner.prefix_cache = lambda *args, **kwargs: None  # no prefix: full forwards everywhere
        yield
    finally:
        runner.ConditionRunner.__init__, runner.prefix_cache = init, prefix_cache
        runner.ConditionRunner.share_prefix, generation.generate_stacked = share, stacked
