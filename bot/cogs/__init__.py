"""The bot's commands, one cog per group: making pictures (making.py), looking at and deleting
them (images.py), the queue and preferences (queue.py), a server's rules (server.py), and the
model's word list (words.py)."""
