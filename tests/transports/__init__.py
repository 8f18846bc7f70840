"""The async transports: aiohttp's, and the SDK's bounded pool (`_slots`)."""
