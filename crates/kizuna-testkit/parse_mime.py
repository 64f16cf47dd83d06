"""Parses a received .eml with Python's email package and prints what the tests check, as JSON."""
import email
import email.policy
import json
import sys

with open(sys.argv[1], "rb") as f:
    message = email.message_from_binary_file(f, policy=email.policy.default)
parts = {}
for part in message.walk():
    if part.get_content_maintype() == "text":
        parts[part.get_content_type()] = part.get_content()
print(json.dumps({
    "headers": {k: str(v) for k, v in message.items()},
    "content_type": message.get_content_type(),
    "text": parts.get("text/plain"),
    "html": parts.get("text/html"),
}))
