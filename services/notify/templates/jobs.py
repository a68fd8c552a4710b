"""Keeps notify's template library current: loads it when start-up could not, and refreshes it.

WeChat's template list changes when the brand adds or removes a template in the console; the
library is read again every ``REFRESH_SECONDS``. A library that no longer fits the rules file is
refused (``TemplateSlot.refuse``): notify stops deciding messages and ``/ready`` says why, rather
than sending with templates that do not exist.
"""

from __future__ import annotations

import asyncio

from services.notify.deps import NotifyDeps
from services.notify.rules.service import check_rules
from services.notify.templates.service import load_library
from shared.errors import ConfigurationError
from shared.observability import get_logger

log = get_logger(__name__)

RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
REFRESH_SECONDS = 3600.0


async def load_once(deps: NotifyDeps) -> bool:
    """Read and check the library; True when it is in."""
    library = await load_library(deps.wechat, deps.settings.wechat_apps)
    try:
        check_rules(deps.rules, library)
    except ConfigurationError as exc:
        deps.templates.refuse(exc.detail)
        log.error("templates.do_not_fit_rules", error=exc.detail)
        return False
    if not deps.templates.loaded:
        log.info("templates.loaded", templates=len(library.templates))
    deps.templates.set(library)
    return True


async def templates_forever(deps: NotifyDeps) -> None:
    failures = 0
    while True:
        if deps.templates.loaded:
            await asyncio.sleep(REFRESH_SECONDS)
        try:
            ok = await load_once(deps)
        except Exception as exc:  # WeChat away: keep what we have (or nothing), try again
            if not deps.templates.loaded:
                deps.templates.refuse(f"WeChat does not answer ({exc.__class__.__name__})")
            log.warning("templates.load_failed", error=repr(exc))
            ok = False
        if ok:
            failures = 0
            continue
        await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
        failures += 1
