"""Roofline planner: predicts TTFT and decode TPS per placement from hardware, link and model shapes."""
