"""A typed CallbackContext: handlers write ``context.storage`` instead of casting bot_data."""

from __future__ import annotations

from typing import Any

from telegram.ext import Application, CallbackContext, ExtBot

from bot.alerts import AlertDispatcher
from bot.config import Config
from bot.pipeline import Pipeline
from bot.services import Services
from bot.storage import Storage

SERVICES_KEY = "services"


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any], chat_id: int | None = None,
                 user_id: int | None = None) -> None:
        super().__init__(application=application, chat_id=chat_id, user_id=user_id)

    @property
    def services(self) -> Services:
        services = self.bot_data.get(SERVICES_KEY)
        if not isinstance(services, Services):
            raise RuntimeError("services are not set up yet (post_init has not run)")
        return services

    @property
    def storage(self) -> Storage:
        return self.services.storage

    @property
    def pipeline(self) -> Pipeline:
        return self.services.pipeline

    @property
    def alerts(self) -> AlertDispatcher:
        return self.services.alerts

    @property
    def config(self) -> Config:
        return self.services.config
