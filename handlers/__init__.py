"""The handler pipeline: pure rules, an Envelope in, effects out. No aiohttp, no amqtt."""
