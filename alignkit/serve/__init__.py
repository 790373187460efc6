"""Talking to a trained model: `chat.chat_loop` behind `alignkit chat`."""
