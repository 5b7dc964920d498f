"""mmaccel.toy"""
