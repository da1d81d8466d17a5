"""The Telegram shell: the only part of ``bot/`` that imports python-telegram-bot.

``context`` (typed CallbackContext), ``adapter`` (Bot API ⇄ plain data: posts in, messages out)
and ``jobs`` (scheduled work on PTB's JobQueue). ``bot.app`` wires them; ``handlers/`` use them.
"""
