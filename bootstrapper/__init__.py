"""bootstrapper"""
