"""Keep the model libraries' progress bars and warnings out of the bot's log.

diffusers, transformers and huggingface_hub draw tqdm bars on stderr while they download and load, and
diffusers and transformers log through a handler of their own that bypasses the bot's (so their lines are
neither structured nor JSON). `quiet_model_libraries()` turns the bars off, sends their records through the
bot's handler instead, and lets only errors through, or warnings too when the bot logs at DEBUG. Called
where a model loads (the pipeline, the safety classifier), after these libraries are imported.
"""

from __future__ import annotations

import logging

MODEL_LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "accelerate", "peft")


def quiet_model_libraries() -> None:
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()
    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.disable_default_handler()  # their own stderr handler, which ignores LOG_JSON
        library.enable_propagation()  # …so their records reach the bot's handler instead
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name in MODEL_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if debug else logging.ERROR)
