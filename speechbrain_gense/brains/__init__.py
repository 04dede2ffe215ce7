"""SpeechBrain ``Brain`` classes of the project (training loops only)."""
