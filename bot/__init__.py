"""imagine-bot: /imagine in Discord, rendered by Stable Diffusion XL."""
