"""scada"""
