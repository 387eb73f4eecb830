"""Render a Diagnosis: rich text for people (`text`), the JSON contract for machines (`json`)."""
