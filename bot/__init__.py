"""Statuary's Discord bot: slash commands and persistent buttons on the job service and store.

    from bot.runner import run_in_thread
    thread = run_in_thread(service, store, settings)   # what `statuary serve` does with DISCORD_TOKEN set

See the README's "Discord bot" section for setting up the application and the commands it offers.
"""
