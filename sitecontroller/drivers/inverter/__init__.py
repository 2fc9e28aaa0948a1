"""inverter"""
