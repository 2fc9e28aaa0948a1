"""mastercontroller"""
